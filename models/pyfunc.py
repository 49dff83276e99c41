"""The loader MLflow's ``python_function`` flavour calls for a quantrec artifact.

The model is logged with ``loader_module="quantrec.models.pyfunc"`` and the artifact directory as
``data_path``: loading imports this module and reads tensors plus the recipe, so no pickled
code is ever executed. This module does not import MLflow; MLflow imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from quantrec.models.artifact import LoadedModel, load_model
from quantrec.models.batch import batch_from_frame
from quantrec.models.scorer import predict_proba

SCORING_BATCH_SIZE = 8192


class ArtifactScorer:
    """Click probabilities for frames that follow the artifact's feature schema."""

    def __init__(self, loaded: LoadedModel, *, batch_size: int = SCORING_BATCH_SIZE) -> None:
        self.loaded = loaded
        self.batch_size = batch_size

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        """(B,) float64 click probabilities; a missing label column is not needed to score."""
        frame = pd.DataFrame(model_input)
        label = self.loaded.schema.label
        if label not in frame.columns:
            frame = frame.assign(**{label: np.zeros(len(frame), dtype=np.int8)})
        batch = batch_from_frame(frame, self.loaded.schema)
        return predict_proba(self.loaded.model, batch, batch_size=self.batch_size)

    def get_raw_model(self) -> LoadedModel:
        return self.loaded


def _load_pyfunc(data_path: str) -> ArtifactScorer:
    return ArtifactScorer(load_model(Path(data_path)))
