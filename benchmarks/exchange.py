"""The all-to-all of pooled embeddings, exact and error-bounded, over links of three rates.

    nice -n 10 python -m quantrec.benchmarks.exchange [--rates 100mbit,1gbit,loopback]
        [--rows-per-day 30000] [--days 3] [--batch-size 2048] [--steps 30] [--json]

The synthetic feed's default DLRM (26 tables, D = ``--dim``, tables capped at
``--max-table-rows`` rows: the exchange's bytes do not depend on the tables' rows) trained by
``models.distributed`` on 2 ranks, one torchrun per link, every variant in turn inside it
(same rows, seed and initial weights; ``--steps`` steps each, the first ``--warmup`` not
timed): ``exact`` and each compressed variant of ``VARIANTS``. Plus 1 rank, loopback.

Links: ``loopback`` is both ranks on this host's ``lo`` (torchrun --standalone). A rate
(``100mbit``, ``1gbit``, any ``tc`` rate) puts each rank in its own network namespace, the
two joined by a veth pair with private addresses (10.213.0.1 and .2, routed nowhere), and
shapes both ends' egress to the rate with a token bucket (``tc qdisc ... tbf rate R``; this
kernel has no ``netem``, so no delay is added); one torchrun per namespace (``--nnodes 2``),
gloo bound to the veth. The namespaces are removed afterwards, also on error. Needs root
(CAP_NET_ADMIN) and ``ip``/``tc`` (iproute2).

Printed per link and variant: the median step time (rank 0), samples/s, the all-to-all
bytes per step of both ranks (what the trainer handed the collective for the other rank),
the bytes of the MLP gradients each rank hands DDP's all-reduce per step (not compressed),
the bytes both veth ends sent per timed step (TCP/IP framing, the size messages and DDP's
all-reduce included; not measured on loopback, which other processes share), the forward
compression ratio, the time in the two all-to-alls per step (codec included), the step
time of exact over the variant's (> 1: compression is faster) and the mean training loss
over the steps run (the same rows in the same order for every variant).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from quantrec.benchmarks.options import EXCHANGE_RATES, EXCHANGE_VARIANTS

# Compressed variants: PooledCompression fields. "fixed 0.01": every table at 1 % of its
# pooled block's range (README: 14-18x at <= 0.06 % NE on the synthetic feed); "dual-level":
# the paper's tight / base / loose 0.01 / 0.03 / 0.05 by sensitivity, log decay from 2x.
VARIANTS = {
    "fixed 0.01": {"base": 0.01, "tight": 0.01, "groups": "fixed", "schedule": "none"},
    "dual-level": {"schedule": "log", "decay_steps": 10, "measure_steps": 5},
}
LOOPBACK = "loopback"
_NETNS = ("qr-exch-a", "qr-exch-b")
_VETH = ("qr-exch-va", "qr-exch-vb")
_ADDRESSES = ("10.213.0.1", "10.213.0.2")
_PORT = 29613


@dataclass(frozen=True)
class ExchangeRow:
    link: str
    ranks: int
    variant: str
    step_ms: float  # median over the timed steps, rank 0
    samples_per_s: float
    a2a_bytes_per_step: float  # both ranks, payload and message sizes
    allreduce_bytes: int  # the MLPs' gradients each rank hands DDP per step
    wire_bytes_per_step: float | None  # both veth ends' tx bytes; None on loopback
    forward_ratio: float | None  # float32 forward bytes over the bytes sent
    exchange_ms: float  # time in the two all-to-alls per step, mean of the ranks
    loss: float  # mean training BCE over the steps run (same rows and order per variant)
    speedup: float | None = None  # exact step time over this variant's, same link


def cpu_model() -> str:
    names = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return f"{names[0]} x {len(names)}" if names else "unknown CPU"


def _tx_bytes() -> int | None:
    name = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    counter = Path(f"/sys/class/net/{name}/statistics/tx_bytes")
    return None if name == "lo" or not counter.exists() else int(counter.read_text())


def worker(job: Path, variants: list[str], warmup: int) -> None:
    """One rank under torchrun: every variant in turn on the job's rows; rank 0 writes
    ``results.json``."""
    import torch
    import torch.distributed as dist

    from quantrec.models.distributed import train_distributed
    from quantrec.models.pooled_compression import PooledCompression
    from quantrec.models.torchrun import read_job

    initial, batch, settings = read_job(job)
    torch.set_num_threads(settings.threads)
    dist.init_process_group("gloo")
    results = []
    for name in variants:
        compression = None if name == "exact" else PooledCompression(**VARIANTS[name])
        model = copy.deepcopy(initial)
        counters: dict[int, int | None] = {}

        def read_counter(step: int, counters: dict = counters) -> None:
            if step in (warmup, settings.max_steps):  # the timed steps only
                counters[step] = _tx_bytes()

        report = train_distributed(
            model,
            batch,
            seed=settings.seed,
            max_steps=settings.max_steps,
            batch_size=settings.batch_size,
            pooled_compression=compression,
            after_step=read_counter,
        )
        before, after = counters.get(warmup), counters.get(settings.max_steps)
        measured = before is not None and after is not None
        wire = torch.tensor([after - before if measured else 0], dtype=torch.int64)
        dist.all_reduce(wire)
        timed = sorted(report.step_seconds[warmup:])
        tower = [p for n, p in model.named_parameters() if not n.startswith("sparse_arch.")]
        exchange = report.exchange
        results.append(
            {
                "variant": name,
                "ranks": report.world_size,
                "steps": report.steps,
                "step_ms": 1e3 * timed[len(timed) // 2],
                "samples_per_s": report.batch_size / timed[len(timed) // 2],
                "a2a_bytes_per_step": report.bytes_per_step,
                "wire_bytes_per_step": int(wire) / len(timed) if measured else None,
                "allreduce_bytes": 4 * sum(p.numel() for p in tower),
                "forward_ratio": exchange.raw_forward_bytes / exchange.forward_bytes
                if compression is not None and exchange.forward_bytes
                else None,
                "loss": report.final_loss,
                "exchange_ms": 1e3
                * (exchange.forward_seconds + exchange.backward_seconds)
                / report.world_size
                / report.steps,
            }
        )
    if dist.get_rank() == 0:
        (job / "results.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def _worker_command(job: Path, variants: list[str], warmup: int, **torchrun) -> list[str]:
    from quantrec.models.torchrun import torchrun_command

    command = torchrun_command(job, **torchrun)
    at = command.index("quantrec.models.torchrun")
    worker_args = ["--worker", "--variants", ",".join(variants), "--warmup", str(warmup)]
    return [*command[:at], "quantrec.benchmarks.exchange", "--job", str(job), *worker_args]


def _run(commands: list[tuple[list[str], dict]], timeout: float) -> None:
    """Run the torchruns of one link side by side (each in its own process group)."""
    from concurrent.futures import ThreadPoolExecutor

    from quantrec.models.torchrun import run_process_group

    with ThreadPoolExecutor(len(commands)) as pool:
        futures = [pool.submit(run_process_group, c, env=e, timeout=timeout) for c, e in commands]
        results = [f.result() for f in futures]
    failed = [(code, out) for out, code in results if code]
    if failed:
        code, out = failed[0]
        tail = "\n".join(out.splitlines()[-25:])
        raise RuntimeError(f"torchrun exited with {code}:\n{tail}")


def _sh(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


@contextmanager
def shaped_link(rate: str):
    """Two namespaces joined by a veth pair, both egresses shaped to ``rate``; yields the
    command prefixes that run a process in each. Removed afterwards."""
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not found: apt-get install iproute2")
    for ns in _NETNS:  # left over by a killed run
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    try:
        for ns in _NETNS:
            _sh("ip", "netns", "add", ns)
        _sh(
            "ip",
            "link",
            "add",
            _VETH[0],
            "netns",
            _NETNS[0],
            "type",
            "veth",
            "peer",
            "name",
            _VETH[1],
            "netns",
            _NETNS[1],
        )
        bits = _rate_bits(rate)
        burst = max(32_000, bits // 8 // 250)  # 4 ms of the rate, at least 32 kB
        for ns, veth, address in zip(_NETNS, _VETH, _ADDRESSES):
            _sh("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", veth)
            _sh("ip", "-n", ns, "link", "set", veth, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh(
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                veth,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                str(burst),
                "latency",
                "100ms",
            )
        yield [["ip", "netns", "exec", ns] for ns in _NETNS]
    finally:
        for ns in _NETNS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _rate_bits(rate: str) -> int:
    units = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
    for unit, scale in units.items():
        if rate.lower().endswith(unit):
            return int(float(rate[: -len(unit)]) * scale)
    raise ValueError(f"rate must end in kbit, mbit or gbit (tc's units), got {rate!r}")


def run_link(
    job: Path, link: str, *, ranks: int, variants: list[str], warmup: int, timeout: float
) -> list[ExchangeRow]:
    """Every variant over one link (``LOOPBACK`` or a tc rate) on ``ranks`` ranks."""
    base_env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if link == LOOPBACK:
        command = _worker_command(job, variants, warmup, nproc_per_node=ranks)
        _run([(command, {**base_env, "GLOO_SOCKET_IFNAME": "lo"})], timeout)
    else:
        if ranks != 2:
            raise ValueError(f"a shaped link joins 2 ranks, got {ranks}")
        with shaped_link(link) as prefixes:
            commands = [
                (
                    [
                        *prefix,
                        *_worker_command(
                            job,
                            variants,
                            warmup,
                            nproc_per_node=1,
                            nnodes=2,
                            node_rank=rank,
                            master=(_ADDRESSES[0], _PORT),
                        ),
                    ],
                    {**base_env, "GLOO_SOCKET_IFNAME": _VETH[rank]},
                )
                for rank, prefix in enumerate(prefixes)
            ]
            _run(commands, timeout)
    results = json.loads((job / "results.json").read_text())
    (job / "results.json").unlink()
    rows = [ExchangeRow(link=link, **{k: v for k, v in r.items() if k != "steps"}) for r in results]
    exact = next((r.step_ms for r in rows if r.variant == "exact"), None)
    return [
        ExchangeRow(**{**asdict(r), "speedup": None if exact is None else exact / r.step_ms})
        for r in rows
    ]


def run(options: argparse.Namespace) -> tuple[list[ExchangeRow], str]:
    from quantrec.flows.train_command import synthetic_job
    from quantrec.models.torchrun import JobSettings
    from quantrec.tasks.config import QuantrecConfig

    variants = ["exact", *[v for v in options.variants if v != "exact"]]
    unknown = [v for v in variants[1:] if v not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    config = QuantrecConfig().with_feed("synthetic", rows_per_day=options.rows_per_day)
    config = config.with_overrides(model={"embedding_dim": options.dim})
    settings = JobSettings(
        seed=config.training.seed,
        max_steps=options.steps + options.warmup,
        batch_size=options.batch_size,
        threads=options.threads,
    )
    rows: list[ExchangeRow] = []
    with tempfile.TemporaryDirectory(prefix="quantrec-exchange-") as tmp:
        job = Path(tmp)
        described = synthetic_job(
            job,
            config,
            run_date=options.date,
            days=options.days,
            max_table_rows=options.max_table_rows,
            settings=settings,
        )
        for link in options.rates:
            rows += run_link(
                job,
                link,
                ranks=2,
                variants=variants,
                warmup=options.warmup,
                timeout=options.timeout,
            )
            print(f"{link}: done", file=sys.stderr)
        rows += run_link(
            job,
            LOOPBACK,
            ranks=1,
            variants=["exact"],
            warmup=options.warmup,
            timeout=options.timeout,
        )
    described += (
        f"; global batch {options.batch_size}, {options.steps} timed steps after "
        f"{options.warmup}; {cpu_model()}, {options.threads} thread(s) per rank"
    )
    return rows, described


def print_table(rows: list[ExchangeRow]) -> None:
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    print(
        f"{'link':<9} {'ranks':>5} {'variant':<11} {'step ms':>8} {'samples/s':>10} "
        f"{'a2a B/step':>11} {'DDP B/rank':>10} {'wire B/step':>11} {'ratio':>6} "
        f"{'a2a ms':>7} {'speedup':>7} {'loss':>8}"
    )
    for r in rows:
        print(
            f"{r.link:<9} {r.ranks:>5} {r.variant:<11} {r.step_ms:>8.1f} "
            f"{r.samples_per_s:>10,.0f} {r.a2a_bytes_per_step:>11,.0f} "
            f"{r.allreduce_bytes:>10,} "
            f"{num(r.wire_bytes_per_step, ',.0f'):>11} {num(r.forward_ratio, '.1f'):>6} "
            f"{r.exchange_ms:>7.1f} {num(r.speedup, '.2f'):>7} {r.loss:>8.5f}"
        )


def run_exchange(options) -> int:
    """``quantrec bench --exchange`` (``benchmarks.options.ExchangeOptions``)."""
    argv = ["--rates", ",".join(options.rates), "--variants", ",".join(options.variants)]
    argv += ["--steps", str(options.steps), "--threads", str(options.threads)]
    return main(argv + (["--json"] if options.json else []))


def main(argv: list[str] | None = None) -> int:
    from datetime import date

    parser = argparse.ArgumentParser(prog="python -m quantrec.benchmarks.exchange")
    parser.add_argument(
        "--rates",
        default=",".join(EXCHANGE_RATES),
        help="comma-separated tc rates and/or 'loopback'",
    )
    parser.add_argument("--variants", default=",".join(EXCHANGE_VARIANTS))
    parser.add_argument("--rows-per-day", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--date", type=date.fromisoformat, default=date(2024, 1, 4))
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--max-table-rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per torchrun")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error(f"--warmup and --steps must be at least 1; got {args.warmup}, {args.steps}")
    args.rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.worker:
        worker(args.job, args.variants, args.warmup)
        return 0
    started = time.perf_counter()
    try:
        rows, described = run(args)
    except (RuntimeError, ValueError) as err:
        print(f"exchange benchmark: {err}", file=sys.stderr)
        return 1
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row), sort_keys=True))
        return 0
    print(described + "\n")
    print_table(rows)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
