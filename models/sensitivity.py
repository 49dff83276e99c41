"""The precision search's per-unit sensitivity measurements, one unit at a time, anywhere.

Step 1 of the search (``models.search``) scores every unit alone at every candidate
precision against the fp32 parent: independent measurements, the part that fans out. A
``SensitivityJob`` is what they read (the parent, the held-out and calibration rows, the
budget, the scoring slice, the precisions per unit); ``save_job`` writes it to a folder once
and ``unit_sensitivity(load_job(folder), unit)`` measures one unit in any process, so only
paths travel between processes, never models.

Each measurement builds its own ``Evaluator`` on the same parent and rows: the unit's
static ranges come from the same recorded activations (calibration hooks are per unit), the
same modules and the same scoring slices, so under the same thread count a unit measured
elsewhere scores bit for bit what the search would score in-process, and the search adopts
those ``Candidate`` records as its own (``search_precision_plan(measure=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import DLRM
from quantrec.models.search_evaluate import Budget, Candidate, Evaluator

JOB_FILE = "sensitivity-job.pt"


@dataclass(frozen=True)
class SensitivityJob:
    """Inputs of the sensitivity measurements; ``options``: unit -> precisions to try."""

    model: DLRM
    held_out: Batch
    calibration: Batch
    budget: Budget
    batch_size: int
    options: dict[str, list[str]]


# Measures every unit of a job somewhere: unit -> its ``unit_sensitivity`` candidates.
SensitivityMeasure = Callable[[SensitivityJob], dict[str, list[Candidate]]]


def unit_sensitivity(job: SensitivityJob, unit: str) -> list[Candidate]:
    """``unit`` alone at each of its precisions (the rest fp32), in ``job.options`` order."""
    if unit not in job.options:
        raise KeyError(f"unit {unit!r} is not in the job's options {sorted(job.options)}")
    precisions = job.options[unit]
    evaluator = Evaluator(job.model, job.held_out, job.calibration, job.budget, job.batch_size)
    evaluator.calibrate({unit: precisions})
    fp32 = {name: "fp32" for name in job.options}
    return [
        evaluator.evaluate({**fp32, unit: precision}, f"sensitivity {unit}={precision}")
        for precision in precisions
    ]


def _batch_dict(batch: Batch) -> dict:
    return {
        "dense": batch.dense,
        "labels": batch.labels,
        "keys": list(batch.sparse.keys),
        "values": list(batch.sparse.values),
        "offsets": list(batch.sparse.offsets),
    }


def _batch(body: dict) -> Batch:
    sparse = KeyedJaggedIds(
        keys=tuple(body["keys"]), values=tuple(body["values"]), offsets=tuple(body["offsets"])
    )
    return Batch(dense=body["dense"], sparse=sparse, labels=body["labels"])


def save_job(job: SensitivityJob, folder: Path) -> Path:
    """Write ``job`` into ``folder`` (tensors only: it loads with ``weights_only``); the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "architecture": job.model.architecture(),
        "weights": {k: t.detach().clone() for k, t in job.model.state_dict().items()},
        "held_out": _batch_dict(job.held_out),
        "calibration": _batch_dict(job.calibration),
        "budget": asdict(job.budget),
        "batch_size": job.batch_size,
        "options": {unit: list(ps) for unit, ps in job.options.items()},
    }
    torch.save(body, folder / JOB_FILE)
    return folder


def load_job(folder: Path) -> SensitivityJob:
    """The job ``save_job`` wrote; the model's outputs match the saved one's bit for bit."""
    body = torch.load(Path(folder) / JOB_FILE, map_location="cpu", weights_only=True)
    # The skeleton's random init is overwritten: do not shift the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        model = DLRM(**body["architecture"])
    model.load_state_dict(body["weights"], strict=True)
    return SensitivityJob(
        model=model.eval(),
        held_out=_batch(body["held_out"]),
        calibration=_batch(body["calibration"]),
        budget=Budget(**body["budget"]),
        batch_size=int(body["batch_size"]),
        options={unit: list(ps) for unit, ps in body["options"].items()},
    )
