"""A distributed training job in a folder, started with torchrun.

    torchrun --standalone --nproc-per-node 2 -m quantrec.models.torchrun --job DIR

``write_job`` puts what every rank needs into a folder: ``model.pt`` (the architecture and the
initial weights), ``batch.pt`` (the training rows, plain tensors) and ``settings.json``
(``JobSettings``). Each rank started by torchrun (``main``) joins the gloo process group,
loads them, runs ``models.distributed.train_distributed``, and rank 0 writes
``report.json`` (``DistributedReport``) and ``trained.pt`` (the trained state_dict).
``launch`` runs torchrun on this machine and reads them back (``read_result``).

``--standalone`` binds its rendezvous and gloo to loopback (``GLOO_SOCKET_IFNAME=lo``); across
hosts (or network namespaces) start one torchrun per node with ``torchrun_command(...,
nnodes=, node_rank=, master=)`` and set ``GLOO_SOCKET_IFNAME`` to the interface between them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.distributed import DistributedReport, train_distributed
from quantrec.models.dlrm import DLRM
from quantrec.models.pooled_compression import CompressionLog, PooledCompression
from quantrec.models.pooled_exchange import ExchangeStats
from quantrec.models.sizing import auto_training_size
from quantrec.models.stream import BatchSource, concat_batches
from quantrec.models.train import (
    CONTINUED_LEARNING_RATE_SCALE,
    DEFAULT_ROWWISE_ADAGRAD_LR,
    TrainReport,
)

MODEL, BATCH, SETTINGS, REPORT, TRAINED = (
    "model.pt",
    "batch.pt",
    "settings.json",
    "report.json",
    "trained.pt",
)


class DistributedRunError(RuntimeError):
    """torchrun or one of its ranks failed; the message holds the end of its output."""


@dataclass(frozen=True)
class JobSettings:
    """``train_distributed``'s arguments for every rank (see there), and its threads.

    Attributes:
        threads: torch intra-op threads per rank (1: the ranks share the cores).
        compression: ``PooledCompression`` fields, or None for the exact exchange.
    """

    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    sparse_learning_rate: float | None = None
    embedding_weight_decay: float = 0.0
    fit_dense_transform: bool = True
    compression: dict | None = None
    measure_error: bool = False
    threads: int = 1

    def pooled_compression(self) -> PooledCompression | None:
        return None if self.compression is None else PooledCompression(**self.compression)


def write_job(folder: Path, model: DLRM, batch: Batch, settings: JobSettings) -> Path:
    """The job's files in ``folder`` (made if missing); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"architecture": model.architecture(), "state": model.state_dict()}, folder / MODEL)
    sparse = batch.sparse
    rows = {
        "dense": batch.dense,
        "labels": batch.labels,
        "keys": list(sparse.keys),
        "values": list(sparse.values),
        "offsets": list(sparse.offsets),
    }
    torch.save(rows, folder / BATCH)
    (folder / SETTINGS).write_text(json.dumps(asdict(settings), indent=1))
    return folder


def read_job(folder: Path) -> tuple[DLRM, Batch, JobSettings]:
    """(model with its initial weights, rows, settings) of a job ``write_job`` wrote."""
    folder = Path(folder)
    saved = torch.load(folder / MODEL, weights_only=True)
    model = DLRM(**saved["architecture"])
    model.load_state_dict(saved["state"])
    rows = torch.load(folder / BATCH, weights_only=True)
    sparse = KeyedJaggedIds(
        keys=tuple(rows["keys"]), values=tuple(rows["values"]), offsets=tuple(rows["offsets"])
    )
    batch = Batch(dense=rows["dense"], sparse=sparse, labels=rows["labels"])
    settings = JobSettings(**json.loads((folder / SETTINGS).read_text()))
    return model, batch, settings


def read_result(folder: Path) -> tuple[DistributedReport, dict[str, torch.Tensor]]:
    """(report, trained state_dict) that rank 0 of the job wrote."""
    folder = Path(folder)
    record = json.loads((folder / REPORT).read_text())
    record["exchange"] = ExchangeStats(**record["exchange"])
    record["owners"] = tuple(record["owners"])
    record["step_seconds"] = tuple(record["step_seconds"])
    if record["compression"] is not None:
        log = record["compression"]
        log["ratios"] = {int(step): ratios for step, ratios in log["ratios"].items()}
        record["compression"] = CompressionLog(**log)
    return DistributedReport(**record), torch.load(folder / TRAINED, weights_only=True)


def torchrun_command(
    folder: Path,
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master: tuple[str, int] | None = None,
) -> list[str]:
    """The torchrun command line of the job in ``folder``: standalone on one node, or one
    node of ``nnodes`` whose rank 0 listens at ``master`` (address, port)."""
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"need nproc_per_node >= 1, nnodes >= 1; got {nproc_per_node}, {nnodes}")
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if master is None:
        launcher.append("--standalone")
    else:
        address, port = master
        launcher += [
            f"--nnodes={nnodes}",
            f"--node-rank={node_rank}",
            f"--master-addr={address}",
            f"--master-port={port}",
        ]
    return [*launcher, "-m", "quantrec.models.torchrun", "--job", str(folder)]


def launch(
    folder: Path, *, nproc_per_node: int, timeout: float | None = None
) -> tuple[DistributedReport, dict[str, torch.Tensor]]:
    """Run the job in ``folder`` with torchrun on this machine (loopback); its result.

    Raises:
        DistributedRunError: torchrun exited non-zero or timed out (the end of its output).
    """
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = torchrun_command(folder, nproc_per_node=nproc_per_node)
    output, code = run_process_group(command, env=env, timeout=timeout)
    if code != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise DistributedRunError(f"torchrun exited with {code}:\n{tail}")
    return read_result(folder)


def run_process_group(
    command: list[str], *, env: dict[str, str], timeout: float | None
) -> tuple[str, int]:
    """(output, exit status) of ``command`` run in a session of its own. If this process
    is stopped or the timeout passes, the whole group goes (torchrun and its ranks), so no
    rank is left waiting in a collective.

    Raises:
        DistributedRunError: the timeout passed.
    """
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        _stop_group(process)
        raise DistributedRunError(f"torchrun did not finish within {timeout} s") from err
    except BaseException:
        _stop_group(process)
        raise
    return output, process.returncode


def _stop_group(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def train_through_torchrun(
    model: DLRM,
    source: Batch | BatchSource,
    *,
    nproc_per_node: int,
    seed: int,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    sparse_optimizer: str = "rowwise_adagrad",
    sparse_learning_rate: float | None = None,
    embedding_weight_decay: float = 0.0,
    continued: bool = False,
    threads: int = 1,
) -> TrainReport:
    """``train_dlrm``'s arguments, trained on ``nproc_per_node`` torchrun ranks instead;
    ``model`` gets the trained weights. ``TrainReport.exchange_bytes_per_step`` holds the
    all-to-all bytes between ranks per step.

    Differences from ``train_dlrm``: fixed epochs (``epochs``, or 1: no early stopping on
    held-out rows), row-wise Adagrad only, a continued run restarts its optimizers at
    ``CONTINUED_LEARNING_RATE_SCALE`` x the rates (no resumed state) and keeps the dense
    transform, as ``train_dlrm`` does without ``optimizer_state``. The rows of a stream are
    read into memory once (one pass in the seeded order) for the ranks to share; ``threads``:
    torch intra-op threads of each rank.

    Raises:
        ValueError: SparseAdam asked for (the sharded trainer has row-wise Adagrad only).
        DistributedRunError: torchrun or a rank failed.
    """
    if sparse_optimizer != "rowwise_adagrad":
        raise ValueError(
            f"training.nproc_per_node > 1 trains the tables with rowwise_adagrad; got "
            f"training.sparse_optimizer = {sparse_optimizer!r}"
        )
    if not isinstance(source, Batch):
        generator = torch.Generator().manual_seed(seed)
        source = concat_batches(list(source.epoch(batch_size=65_536, generator=generator)))
    size = auto_training_size(len(source), batch_size=batch_size, learning_rate=learning_rate)
    learning_rate = size.learning_rate
    sparse_learning_rate = sparse_learning_rate or DEFAULT_ROWWISE_ADAGRAD_LR
    if continued:
        learning_rate *= CONTINUED_LEARNING_RATE_SCALE
        sparse_learning_rate *= CONTINUED_LEARNING_RATE_SCALE
    settings = JobSettings(
        seed=seed,
        epochs=epochs or 1,
        batch_size=size.batch_size,
        learning_rate=learning_rate,
        sparse_learning_rate=sparse_learning_rate,
        embedding_weight_decay=embedding_weight_decay,
        fit_dense_transform=not continued,
        threads=threads,
    )
    with tempfile.TemporaryDirectory(prefix="quantrec-torchrun-") as folder:
        write_job(Path(folder), model, source, settings)
        report, state = launch(Path(folder), nproc_per_node=nproc_per_node)
    model.load_state_dict(state)
    model.optimizer_state = None
    model.eval()
    return TrainReport(
        steps=report.steps,
        samples=report.samples,
        seconds=report.seconds,
        samples_per_s=report.samples_per_s,
        final_loss=report.final_loss,
        epoch_losses=(report.final_loss,) * settings.epochs,
        best_epoch=settings.epochs,
        stop_reason=f"{settings.epochs} epoch(s) as asked, on {nproc_per_node} ranks",
        batch_size=report.batch_size,
        learning_rate=learning_rate,
        sparse_learning_rate=sparse_learning_rate,
        exchange_bytes_per_step=report.bytes_per_step,
    )


def main(argv: list[str] | None = None) -> int:
    """One rank of a job (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    parser = argparse.ArgumentParser(prog="python -m quantrec.models.torchrun")
    parser.add_argument("--job", required=True, type=Path, help="folder written by write_job")
    args = parser.parse_args(argv)
    model, batch, settings = read_job(args.job)
    torch.set_num_threads(settings.threads)
    dist.init_process_group("gloo")
    try:
        report = train_distributed(
            model,
            batch,
            seed=settings.seed,
            epochs=settings.epochs,
            max_steps=settings.max_steps,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            sparse_learning_rate=settings.sparse_learning_rate,
            embedding_weight_decay=settings.embedding_weight_decay,
            fit_dense_transform=settings.fit_dense_transform,
            pooled_compression=settings.pooled_compression(),
            measure_error=settings.measure_error,
        )
        if dist.get_rank() == 0:
            torch.save(model.state_dict(), args.job / TRAINED)
            (args.job / REPORT).write_text(json.dumps(asdict(report)))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
