"""Pure-torch core of quantrec: batches, DLRM, training, metrics, quantization, artifacts.

One module per lifecycle verb: ``batch`` (frames to typed batches), ``dlrm`` (the model),
``train``, ``metrics`` (NE, AUC, calibration), ``quantize`` (precision recipes),
``artifact`` (save / load without pickled code), ``scorer`` (predict and evaluate).
Nothing here imports prefect or mlflow.
"""
