"""Pure-torch core of quantrec: batches, DLRM, training, metrics, quantization, artifacts.

One module per lifecycle verb: ``batch`` (frames to typed batches), ``dlrm`` (the model),
``train``, ``metrics`` (NE, AUC, calibration), ``recipes`` (low-precision modules behind one
registry), ``quantize`` (apply a precision plan), ``plan`` (precision plans as JSON),
``search`` (accuracy-aware precision search), ``fused`` (fused table lookups for serving),
``artifact`` (save / load without pickled code), ``scorer`` (predict and evaluate),
``benchmark`` (Criteo-shaped inference benchmark). Nothing here imports prefect or mlflow.
"""
