"""Training: it learns a learnable toy day, is bit-reproducible, and warm-starts."""

from __future__ import annotations

import pytest
import torch

from models.dlrm import DLRM
from models.quantize import quantize_int8
from models.scorer import score
from models.train import TrainReport, train_dlrm, warm_start

FAST = dict(epochs=3, batch_size=64, learning_rate=0.02)


def test_training_reduces_loss_and_beats_the_click_rate(make_model, make_batch) -> None:
    model, batch = make_model(seed=0), make_batch(rows=2048, seed=0)
    report = train_dlrm(model, batch, seed=0, **FAST)

    assert isinstance(report, TrainReport)
    assert report.steps == 3 * 32 and report.samples == 3 * 2048
    assert report.samples_per_s > 0 and report.seconds > 0
    assert report.final_loss == report.epoch_losses[-1]
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert not model.training
    # Held-out day from the same generator: the user/item signal generalises.
    held_out = score(model, make_batch(rows=2048, seed=1))
    assert held_out.ne < 0.9, held_out
    assert held_out.auc > 0.7, held_out


def test_same_seed_data_and_init_give_bit_identical_weights(make_model, make_batch) -> None:
    batch = make_batch(rows=512)
    first, second = make_model(seed=5), make_model(seed=5)
    report_a = train_dlrm(first, batch, seed=11, **FAST)
    report_b = train_dlrm(second, batch, seed=11, **FAST)
    assert report_a.epoch_losses == report_b.epoch_losses
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name

    third = make_model(seed=5)
    train_dlrm(third, batch, seed=12, **FAST)
    assert not torch.equal(third.over_arch.mlp[0].weight, first.over_arch.mlp[0].weight)


def test_embeddings_get_sparse_updates_only_on_seen_rows(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch(rows=64)
    table = model.sparse_arch.embedding_bags[0].weight
    before = table.detach().clone()
    train_dlrm(model, batch, epochs=1, batch_size=64, learning_rate=0.01, seed=0)
    changed = (table.detach() != before).any(dim=1)
    seen = torch.zeros(table.shape[0], dtype=torch.bool)
    seen[batch.sparse.values[0]] = True
    assert torch.equal(changed, seen)


def test_last_partial_slice_is_trained_on(make_model, make_batch) -> None:
    report = train_dlrm(
        make_model(), make_batch(rows=100), epochs=2, batch_size=64, learning_rate=0.01, seed=0
    )
    assert report.steps == 4 and report.samples == 200


@pytest.mark.parametrize(
    "change", [{"epochs": 0}, {"batch_size": 0}, {"learning_rate": 0.0}]
)
def test_bad_training_arguments_are_rejected(make_model, make_batch, change) -> None:
    with pytest.raises(ValueError, match="epochs=.*batch_size=.*learning_rate="):
        train_dlrm(make_model(), make_batch(rows=8), seed=0, **{**FAST, **change})


def test_empty_batch_is_rejected(make_model, make_batch) -> None:
    with pytest.raises(ValueError, match="0 rows"):
        train_dlrm(make_model(), make_batch(rows=8).slice(0, 0), seed=0, **FAST)


def test_warm_start_copies_matching_shapes_only(make_model) -> None:
    champion = make_model(seed=1)
    challenger = DLRM(**{**champion.architecture(), "table_sizes": [97, 61, 48]})  # hour table resized
    copied = warm_start(challenger, champion)

    assert "sparse_arch.embedding_bags.0.weight" in copied
    assert "sparse_arch.embedding_bags.2.weight" not in copied
    assert torch.equal(challenger.over_arch.mlp[0].weight, champion.over_arch.mlp[0].weight)
    assert challenger.sparse_arch.embedding_bags[2].weight.shape == (48, 4)


def test_warm_start_from_an_int8_champion_dequantizes(make_model) -> None:
    champion = make_model(seed=2)
    challenger = make_model(seed=3)
    copied = warm_start(challenger, quantize_int8(champion))
    assert len(copied) == len(champion.state_dict())
    for name in ("sparse_arch.embedding_bags.0.weight", "dense_arch.mlp.0.weight"):
        torch.testing.assert_close(
            challenger.get_parameter(name), champion.get_parameter(name), atol=0.01, rtol=0
        )


def test_torch_threads_sets_and_restores():
    from models.train import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with torch_threads(0):
            pass
