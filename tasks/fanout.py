"""Work that fans out, on the task runner the config names (``[scale]``).

    [scale]
    task_runner = "dask"         # default "sequential": in the flow's process, in order
    dask_address = ""            # an existing cluster's scheduler; empty: a LocalCluster
    dask_workers = 2             # LocalCluster workers (processes) x dask_threads_per_worker

With ``"dask"`` the precision search's per-unit sensitivity measurements run as
``unit-sensitivity`` tasks on a ``prefect_dask.DaskTaskRunner`` (a Prefect task run each, so
they show under the precision-plan stage). Only paths travel: the search's inputs are saved
once under the home (``models.sensitivity.save_job``), every task loads them (once per
worker process) and returns its unit's scores, which the search adopts; the plan is the one
the sequential search finds. A cluster at ``dask_address`` must see the same home (a shared
file system) and run the same code.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from quantrec.models.search_evaluate import Candidate
from quantrec.models.sensitivity import (
    JOB_FILE,
    SensitivityJob,
    SensitivityMeasure,
    load_job,
    save_job,
    unit_sensitivity,
)
from quantrec.models.train import torch_threads
from quantrec.tasks.config import ScaleConfig
from quantrec.tasks.settings import quantrec_home


def dask_task_runner(scale: ScaleConfig):
    """A ``DaskTaskRunner`` on ``scale.dask_address``, else on a fresh ``LocalCluster``."""
    from prefect_dask import DaskTaskRunner

    if scale.dask_address:
        return DaskTaskRunner(address=scale.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": scale.dask_workers,
            "threads_per_worker": scale.dask_threads_per_worker,
            "processes": True,
            "dashboard_address": None,  # no web server
            "host": "127.0.0.1",
        },
    )


@lru_cache(maxsize=1)
def _job(folder: str, stamp: float) -> SensitivityJob:
    """The job of ``folder`` as written at ``stamp``: a worker loads it once, not per unit."""
    return load_job(Path(folder))


@task(name="unit-sensitivity", cache_policy=NO_CACHE)
def measure_unit(job_dir: str, unit: str, threads: int | None) -> list[dict]:
    """One unit alone at each of its precisions, scored as the search would score it."""
    stamp = (Path(job_dir) / JOB_FILE).stat().st_mtime
    with torch_threads(threads):
        return [asdict(c) for c in unit_sensitivity(_job(job_dir, stamp), unit)]


def sensitivity_measure(scale: ScaleConfig, *, threads: int | None) -> SensitivityMeasure | None:
    """The search's ``measure`` for ``scale`` (None: sequential, in-process)."""
    if scale.task_runner == "sequential":
        return None

    def measure(job: SensitivityJob) -> dict[str, list[Candidate]]:
        root = quantrec_home().root / "scratch"
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="sensitivity-", dir=root))
        try:
            save_job(job, folder)
            with dask_task_runner(scale) as runner:
                futures = {
                    unit: runner.submit(
                        measure_unit,
                        parameters={"job_dir": str(folder), "unit": unit, "threads": threads},
                    )
                    for unit in job.options
                }
                return {
                    unit: [Candidate(**c) for c in future.result()]
                    for unit, future in futures.items()
                }
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return measure
