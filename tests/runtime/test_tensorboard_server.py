"""The real `tensorboard` process, on 127.0.0.1, serves our runs' tags."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from model_variables import AE_VARIABLES

MODEL_VARIABLES = tuple(AE_VARIABLES)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_serves_scalars_images_histograms_graph_and_projector(ae_run, tmp_path):
    # The shared autoencoder run (one epoch, a summary every 10 steps) is the only run in
    # its parent folder: TensorBoard only reads it.
    logdir = Path(ae_run.model_dir).parent
    run = Path(ae_run.model_dir).name
    assert os.listdir(logdir) == [run]

    port = _free_port()
    # Its log goes to a file: a pipe nobody reads while the test polls could fill and stall it.
    log = open(tmp_path / "tensorboard.log", "w+", encoding="utf-8")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 600  # generous: TensorFlow's import alone is slow on a busy machine
        scalars = {}
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()
            try:
                scalars = _get(port, "/data/plugin/scalars/tags")
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                scalars = {}
            if "eval/bce_per_pixel" in scalars.get(run, {}):
                break
            time.sleep(0.5)
        assert {"losses/train", "eval/bce_per_pixel", "eval/l2_per_pixel"} <= set(scalars[run])
        assert "reconstructions/input_vs_output" in "".join(_get(port, "/data/plugin/images/tags")[run])
        histograms = set(_get(port, "/data/plugin/histograms/tags")[run])
        assert {f"weights/{name}" for name in MODEL_VARIABLES} | {"latent/code"} <= histograms
        assert _get(port, "/data/plugin/graphs/info")[run]["run_graph"] is True
        assert run in _get(port, "/data/plugin/projector/runs")
    finally:
        server.terminate()
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
