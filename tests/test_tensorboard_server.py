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

MODEL_VARIABLES = (
    "conv1/kernel",
    "conv1/bias",
    "conv2/kernel",
    "conv2/bias",
    "latent_var/kernel",
    "latent_var/bias",
    "z_matrix/kernel",
    "z_matrix/bias",
    "dconv1/kernel",
    "dconv1/bias",
    "dconv2/kernel",
    "dconv2/bias",
)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_serves_scalars_images_histograms_graph_and_projector(ae_run):
    # The shared autoencoder run (one epoch, a summary every 10 steps) is the only run in
    # its parent folder: TensorBoard only reads it.
    logdir = Path(ae_run.model_dir).parent
    run = Path(ae_run.model_dir).name
    assert os.listdir(logdir) == [run]

    port = _free_port()
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
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        scalars = {}
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read()
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
        server.wait(timeout=30)
