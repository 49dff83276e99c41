"""Table-wise sharded training: 2 ranks against one process, the bytes of the exchange, and
the compressed exchange within its bound.

The torchrun test runs the real entry point (``models.torchrun``); the others fork ranks of
a gloo group on 127.0.0.1 from the test process, which has torch imported already.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.distributed import train_distributed
from quantrec.models.dlrm import DLRM
from quantrec.models.pooled_compression import PooledCompression, PooledCompressor
from quantrec.models.pooled_exchange import PooledExchange, TableSharding, sample_splits
from quantrec.models.torchrun import (
    DistributedRunError,
    JobSettings,
    launch,
    run_process_group,
    train_through_torchrun,
    write_job,
)
from quantrec.models.train import train_dlrm

TABLES = [60, 50, 40]  # three tables on two ranks: rank 0 owns the largest, rank 1 the others
DIM = 4


def tiny_model() -> DLRM:
    torch.manual_seed(0)
    return DLRM(
        num_dense=3,
        table_sizes=TABLES,
        embedding_dim=DIM,
        bottom_mlp=[8, DIM],
        top_mlp=[8, 1],
        feature_names=["a", "b", "c"],
        first_order=True,
    )


def tiny_batch(rows: int = 192, seed: int = 1) -> Batch:
    """Random rows; feature "c" is multi-valued (bags of 0-2 ids)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 3, (rows,), generator=g)
    values = [torch.randint(0, n, (rows,), generator=g) for n in TABLES[:2]]
    values.append(torch.randint(0, TABLES[2], (int(lengths.sum()),), generator=g))
    offsets = [torch.arange(rows), torch.arange(rows), torch.cumsum(lengths, 0) - lengths]
    sparse = KeyedJaggedIds(keys=("a", "b", "c"), values=tuple(values), offsets=tuple(offsets))
    dense = torch.rand(rows, 3, generator=g) * 5
    labels = (torch.rand(rows, generator=g) < 0.3).float()
    return Batch(dense=dense, sparse=sparse, labels=labels)


def _reference(epochs: int = 2) -> tuple[DLRM, DLRM, object]:
    """(initial model, the same trained in one process, its report) on the tiny rows."""
    model = tiny_model()
    reference = copy.deepcopy(model)
    report = train_dlrm(
        reference, tiny_batch(), seed=3, epochs=epochs, batch_size=63, learning_rate=0.01
    )
    return model, reference, report


def _assert_same_weights(trained: dict, reference: DLRM, initial: DLRM) -> None:
    expected = reference.state_dict()
    assert trained.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(trained[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    # Trained at all: every table moved from its initial rows.
    for f in range(len(TABLES)):
        name = f"sparse_arch.embedding_bags.{f}.weight"
        assert not torch.equal(trained[name], initial.state_dict()[name])


def _train_tiny(rank: int, world: int, out: Path) -> dict:
    model = tiny_model()
    report = train_distributed(
        model, tiny_batch(), seed=3, epochs=2, batch_size=63, learning_rate=0.01
    )
    if rank == 0:
        torch.save(model.state_dict(), out / "trained.pt")
    return {"steps": report.steps, "loss": report.final_loss, "owners": report.owners}


def test_two_ranks_train_as_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    initial, reference, expected = _reference()
    record = _run_ranks(_train_tiny, 2, tmp_path, tmp_path)[0]
    assert record["steps"] == expected.steps == 8 and record["owners"] == [0, 1, 1]
    assert record["loss"] == pytest.approx(expected.final_loss, rel=1e-5)
    _assert_same_weights(torch.load(tmp_path / "trained.pt"), reference, initial)


@pytest.mark.slow
def test_two_ranks_under_torchrun_train_as_one_process(tmp_path: Path) -> None:
    initial, reference, expected = _reference()
    settings = JobSettings(seed=3, epochs=2, batch_size=63, learning_rate=0.01)
    job = write_job(tmp_path, initial, tiny_batch(), settings)
    report, trained = launch(job, nproc_per_node=2, timeout=300)
    assert report.world_size == 2 and report.steps == 8 and report.owners == (0, 1, 1)
    assert report.final_loss == pytest.approx(expected.final_loss, rel=1e-5)
    assert report.exchange.forward_bytes > 0
    _assert_same_weights(trained, reference, initial)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(fn, world: int, out: Path, *args) -> list[dict]:
    """Run ``fn(rank, world, out, *args)`` in ``world`` forked ranks of a gloo group; each
    rank's JSON record from ``out/rank-<r>.json``."""
    port = _free_port()
    mp.start_processes(
        _rank_main, args=(world, port, out, fn, args), nprocs=world, start_method="fork"
    )
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(world)]


def _rank_main(rank: int, world: int, port: int, out: Path, fn, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        record = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
    (out / f"rank-{rank}.json").write_text(json.dumps(record))


def _train_for_bytes(rank: int, world: int, compression: dict | None) -> dict:
    settings = None if compression is None else PooledCompression(**compression)
    report = train_distributed(
        tiny_model(),
        tiny_batch(rows=150),
        seed=0,
        batch_size=50,
        pooled_compression=settings,
        measure_error=settings is not None,
    )
    log = report.compression
    return {
        "steps": report.steps,
        "forward": report.exchange.forward_bytes,
        "backward": report.exchange.backward_bytes,
        "counts": report.exchange.count_bytes,
        "raw_forward": report.exchange.raw_forward_bytes,
        "bounds": None if log is None else log.bounds,
        "groups": None if log is None else log.groups,
        "max_error_over_bound": None if log is None else log.max_error_over_bound,
        "ratios": None if log is None else log.overall_ratio(),
    }


@pytest.mark.parametrize("world", [1, 2])
def test_bytes_exchanged_per_step_are_what_the_shapes_predict(world: int, tmp_path: Path) -> None:
    records = _run_ranks(_train_for_bytes, world, tmp_path, None)
    sharding = TableSharding.table_wise(TABLES, world)
    splits = sample_splits(50, world)
    steps = records[0]["steps"]
    assert steps == 3
    forward = backward = 0
    for r in range(world):  # per step: 4 D F_r (B - n_r) forward, 4 D n_r (F - F_r) back
        owned = len(sharding.tables_of(r))
        forward += 4 * DIM * owned * (50 - splits[r])
        backward += 4 * DIM * splits[r] * (len(TABLES) - owned)
    assert records[0]["forward"] == steps * forward
    assert records[0]["backward"] == steps * backward
    assert records[0]["counts"] == 0
    if world == 2:  # 8 D F B (W - 1) / W in all
        assert forward + backward == 8 * DIM * len(TABLES) * 50 // 2


def test_compressed_training_logs_bounds_and_stays_within_them(tmp_path: Path) -> None:
    compression = {"groups": "table", "schedule": "log", "decay_steps": 2, "measure_steps": 1}
    record = _run_ranks(_train_for_bytes, 2, tmp_path, compression)[0]
    settings = PooledCompression(**compression)
    assert len(record["bounds"]) == record["steps"] == 3
    assert sorted(record["groups"]) == ["base", "loose", "tight"]
    assert record["bounds"][0] == [settings.base * settings.factor(0)] * 3
    assert record["bounds"][2] == [settings.group_bound(g) for g in record["groups"]]
    assert 0 < record["max_error_over_bound"] <= 1.0
    assert record["forward"] < record["raw_forward"]  # the codec's bytes crossed, not fp32
    assert record["counts"] > 0


def _exchange_both_ways(rank: int, world: int, rel: float) -> dict:
    """The same pooled blocks exchanged exact and compressed; the worst error over bound."""
    sharding = TableSharding.table_wise(TABLES, world)
    splits = sample_splits(37, world)  # uneven: 19 and 18 samples
    full = torch.randn(37, len(TABLES), DIM, generator=torch.Generator().manual_seed(5)) * 3
    owned = sharding.tables_of(rank)
    local = full[:, owned].contiguous()
    exact = PooledExchange(sharding, rank).forward(local, splits)
    settings = PooledCompression(base=rel, tight=rel, groups="fixed", schedule="none")
    compressor = PooledCompressor(settings, ["a", "b", "c"])
    compressed = PooledExchange(sharding, rank, compressor=compressor).forward(local, splits)
    start = sum(splits[:rank])
    mine = full[start : start + splits[rank]]
    span = full.amax(dim=(0, 2)) - full.amin(dim=(0, 2))  # each owner's block range
    error = (compressed - exact).abs().amax(dim=(0, 2))
    return {
        "exact_equal": torch.equal(exact, mine),
        "error_over_bound": (error.double() / (rel * span.double())).tolist(),
        "changed": bool((compressed != exact).any()),
    }


def test_compressed_exchange_is_within_the_bound_of_each_tables_block(tmp_path: Path) -> None:
    for record in _run_ranks(_exchange_both_ways, 2, tmp_path, 0.02):
        assert record["exact_equal"]
        assert record["changed"]
        assert max(record["error_over_bound"]) <= 1.0


def test_sharding_refuses_more_ranks_than_tables() -> None:
    assert TableSharding.table_wise([10, 30, 20], 2).owners == (1, 0, 1)
    with pytest.raises(ValueError, match="4 ranks for 3 tables"):
        TableSharding.table_wise([10, 30, 20], 4)


@pytest.mark.slow
def test_train_through_torchrun_gives_the_trained_weights_and_its_bytes() -> None:
    initial, reference, expected = _reference()
    model = copy.deepcopy(initial)
    report = train_through_torchrun(
        model, tiny_batch(), nproc_per_node=2, seed=3, epochs=2, batch_size=63, learning_rate=0.01
    )
    assert report.steps == expected.steps and report.epochs == 2
    assert report.exchange_bytes_per_step > 0 and model.optimizer_state is None
    _assert_same_weights(model.state_dict(), reference, initial)


def test_train_through_torchrun_refuses_sparse_adam_before_starting() -> None:
    with pytest.raises(ValueError, match="sparse_optimizer = 'sparse_adam'"):
        train_through_torchrun(
            tiny_model(), tiny_batch(), nproc_per_node=2, seed=0, sparse_optimizer="sparse_adam"
        )


@pytest.mark.slow
def test_the_training_stage_runs_through_torchrun_when_the_config_says_so(tmp_path: Path) -> None:
    from quantrec.benchmarks.codec import TEST_DAY, write_days
    from quantrec.models.lifecycle import train_fp32
    from quantrec.tasks.config import QuantrecConfig

    config = QuantrecConfig().with_feed("synthetic", rows_per_day=2000)
    config = config.with_overrides(training={"nproc_per_node": 2, "epochs": 1})
    feed = config.feed.build(TEST_DAY)
    paths = write_days(tmp_path, feed, 2)
    trained = train_fp32(
        paths,
        feed.schema(),
        model=config.model,
        training=config.training,
        holdout_fraction=config.search.holdout_fraction,
    )
    assert "on 2 ranks" in trained.report.stop_reason and trained.report.epochs == 1
    assert trained.report.exchange_bytes_per_step > 0
    assert trained.report.samples == trained.rows


def test_a_timed_out_launch_stops_the_launcher_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    )
    with pytest.raises(DistributedRunError, match="did not finish within 5 s"):
        run_process_group([sys.executable, "-c", parent], env=dict(os.environ), timeout=5)
    status = Path(f"/proc/{pid_file.read_text()}/status")
    for _ in range(50):  # SIGTERM reaches the child with the group; give it a moment
        if not status.exists() or "zombie" in status.read_text():
            break
        time.sleep(0.1)
    assert not status.exists() or "zombie" in status.read_text()
