"""Compressed pooled embeddings in training: bounds held, schedule, groups, logged, reproducible."""

from __future__ import annotations

import pytest
import torch

from quantrec.models.codec import CodecError, decode_table, encode_table
from quantrec.models.pooled_compression import PooledCompression, PooledCompressor
from quantrec.models.train import train_dlrm


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("none", [1.0, 1.0, 1.0, 1.0]),
        ("step", [2.0, 2.0, 2.0, 1.0]),
        ("linear", [2.0, 1.75, 1.25, 1.0]),
    ],
)
def test_iteration_wise_factor_decays_from_twice_to_the_bound(schedule, expected) -> None:
    settings = PooledCompression(schedule=schedule, decay_steps=4)
    assert [settings.factor(t) for t in (0, 1, 3, 4)] == expected


def test_log_schedule_decays_monotonically_to_one() -> None:
    settings = PooledCompression(schedule="log", decay_steps=50)
    factors = [settings.factor(t) for t in range(60)]
    assert factors[0] == 2.0 and factors[50:] == [1.0] * 10
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="tight <= base <= loose"):
        PooledCompression(tight=0.05, base=0.03)
    with pytest.raises(ValueError, match="schedule must be one of"):
        PooledCompression(schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="relative error bound"):
        PooledCompression(base=0.0)


def test_exchange_is_the_codec_round_trip_within_each_tables_bound() -> None:
    generator = torch.Generator().manual_seed(0)
    pooled = torch.randn(64, 3, 8, generator=generator) * torch.tensor([0.1, 1.0, 10.0])[:, None]
    pooled[:, 2] = 0.5  # a constant block passes exactly
    compressor = PooledCompressor(
        PooledCompression(groups="fixed", schedule="none"), ["a", "b", "c"]
    )
    decoded = compressor.exchange(pooled)
    for f in range(2):
        block = pooled[:, f]
        expected = decode_table(encode_table(block, rel_bound=0.03))
        assert torch.equal(decoded[:, f], expected)
        assert (decoded[:, f] - block).abs().max() <= 0.03 * float(block.max() - block.min())
    assert torch.equal(decoded[:, 2], pooled[:, 2])
    assert compressor.log.bounds == [[0.03, 0.03, 0.0]]
    assert compressor.log.ratios[0][0] > 3 and compressor.log.max_error_over_bound <= 1.0

    pooled[5, 1, 2] = float("nan")
    with pytest.raises(CodecError, match="pooled embeddings of table b hold NaN"):
        compressor.exchange(pooled)


def test_table_wise_groups_follow_measured_sensitivity() -> None:
    settings = PooledCompression(schedule="none", measure_steps=2)
    compressor = PooledCompressor(settings, ["f0", "f1", "f2", "f3", "f4", "f5"])
    pooled = torch.randn(32, 6, 4, generator=torch.Generator().manual_seed(1))
    scale = torch.tensor([1.0, 6.0, 3.0, 5.0, 2.0, 4.0])[None, :, None]
    for _ in range(2):
        compressor.exchange(pooled)
        compressor.observe(torch.ones(32, 6, 4) * scale)  # equal ranges: gradient ranks
    assert compressor.log.groups == ["loose", "tight", "base", "tight", "loose", "base"]
    compressor.exchange(pooled)
    assert compressor.log.bounds[-1] == [0.05, 0.01, 0.03, 0.01, 0.05, 0.03]


def _train(make_model, rows, compression):
    model = make_model(seed=0, embedding_dim=8)
    report = train_dlrm(
        model,
        rows,
        epochs=2,
        batch_size=128,
        learning_rate=0.02,
        seed=0,
        pooled_compression=compression,
    )
    return model, report


def test_training_with_compressed_pooled_embeddings_is_logged_and_reproducible(
    make_model, make_batch
) -> None:
    rows, held_out = make_batch(rows=2048), make_batch(rows=1024, seed=5)
    settings = PooledCompression(decay_steps=16, measure_steps=4, ratio_every=8)
    model, report = _train(make_model, rows, settings)
    log = report.compression
    assert len(log.bounds) == report.steps == 32 and len(log.bounds[0]) == 3
    assert log.bounds[0] == [0.06] * 3  # twice the base bound, before groups are measured
    assert sorted(log.groups) == ["base", "loose", "tight"] and len(log.sensitivity) == 3
    assert log.bounds[-1] == [settings.group_bound(g) for g in log.groups]
    assert sorted(log.ratios) == [0, 8, 16, 24] and min(log.overall_ratio(), *log.mean_ratio()) > 2
    assert log.max_error_over_bound <= 1.0

    again, _ = _train(make_model, rows, settings)
    exact, plain = _train(make_model, rows, None)
    assert plain.compression is None
    with torch.inference_mode():
        assert torch.equal(again(held_out), model(held_out))  # seeded: bit-identical
        # Bounded noise on the exchange, not a different model: close to exact training.
        assert (torch.sigmoid(model(held_out)) - torch.sigmoid(exact(held_out))).abs().mean() < 0.05


def test_compression_needs_the_fused_path(make_model, make_batch) -> None:
    with pytest.raises(ValueError, match="pooled_compression runs on the fused path"):
        train_dlrm(
            make_model(seed=0),
            make_batch(rows=64),
            epochs=1,
            seed=0,
            fused=False,
            pooled_compression=PooledCompression(),
        )
