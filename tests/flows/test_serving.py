"""The champion answers scoring requests from ``mlflow models serve`` on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np

from quantrec.models.batch import batch_from_frame
from quantrec.models.scorer import predict_proba
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import load_version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow models serve did not answer {url} within {timeout} s")


def test_mlflow_models_serve_scores_a_request(backfilled, client, tmp_path):
    home, config, _ = backfilled
    name = config.registry.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    frame = (
        quantrec_home()
        .day_lake()
        .read(date.fromisoformat(champion.tags["quantrec.run_date"]))
        .head(20)
    )
    features = frame.drop(columns=["label"])
    port = free_port()
    bin_dir = Path(sys.executable).parent
    # The scoring server execs uvicorn by name: the venv's bin must be on PATH.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": client.tracking_uri,
        "MLFLOW_REGISTRY_URI": client.tracking_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{name}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", process)
        body = json.dumps({"dataframe_split": features.to_dict(orient="split")}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    finally:
        process.terminate()
        process.wait(timeout=30)
    served = np.asarray(answer["predictions"], dtype=np.float64)
    loaded = load_version(name, str(champion.version))
    expected = predict_proba(loaded.model, batch_from_frame(frame, loaded.schema))
    np.testing.assert_allclose(served, expected, rtol=1e-6)
