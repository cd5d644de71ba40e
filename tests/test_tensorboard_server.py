"""The real `tensorboard` process, on 127.0.0.1, serves our runs' tags."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import train_autoencoder

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
def test_tensorboard_serves_scalars_images_histograms_graph_and_projector(tmp_path):
    logdir = tmp_path / "runs"
    assert (
        train_autoencoder.main(
            ["--sample", "--epochs", "1", "--summary-every", "10", "--model-dir", str(logdir / "autoencoder")]
        )
        == 0
    )

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
            if "eval/bce_per_pixel" in scalars.get("autoencoder", {}):
                break
            time.sleep(0.5)
        assert {"losses/train", "eval/bce_per_pixel", "eval/l2_per_pixel"} <= set(scalars["autoencoder"])
        assert "reconstructions/input_vs_output" in "".join(_get(port, "/data/plugin/images/tags")["autoencoder"])
        histograms = set(_get(port, "/data/plugin/histograms/tags")["autoencoder"])
        assert {f"weights/{name}" for name in MODEL_VARIABLES} | {"latent/code"} <= histograms
        assert _get(port, "/data/plugin/graphs/info")["autoencoder"]["run_graph"] is True
        assert "autoencoder" in _get(port, "/data/plugin/projector/runs")
    finally:
        server.terminate()
        server.wait(timeout=30)
