"""Tests for runtime/onednn.py: which TF_ENABLE_ONEDNN_OPTS a process gets, and that a user's value wins.

Fake cpuinfo files stand for the CPUs; nothing is timed. The subprocess tests check the
real thing once: the variable is in place before TensorFlow reads it, and TensorFlow
then runs with what the state says.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import onednn

REPO = Path(__file__).resolve().parents[2]

# First processor of each kind, trimmed to the fields that matter; a second processor
# follows where the real file has one, to check that only the first is read.
EPYC_MILAN = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: SOMETHING ELSE
flags\t\t: fpu sse sse2
"""
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse4_2 avx fma avx2 avx512f avx512dq avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
OLD_XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz
flags\t\t: fpu sse4_2 avx
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
CPU implementer\t: 0x41
"""


@pytest.fixture
def cpuinfo(tmp_path):
    def write(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def _choose(cpuinfo_path, environ, machine="x86_64", modules=()):
    return onednn.choose(environ=environ, cpuinfo=cpuinfo_path, machine=machine, modules=set(modules))


def test_reads_the_first_processor(cpuinfo):
    cpu = onednn.read_cpu(cpuinfo(EPYC_MILAN), machine="x86_64")
    assert cpu["vendor"] == "AuthenticAMD"
    assert cpu["model"] == "AMD EPYC"
    assert "avx2" in cpu["flags"] and "vaes" in cpu["flags"]
    assert onednn.vector_extensions(cpu) == ["sse4_2", "avx", "fma", "avx2"]


def test_arm_features_line_and_missing_file(cpuinfo, tmp_path):
    arm = onednn.read_cpu(cpuinfo(GRAVITON), machine="aarch64")
    assert arm["vendor"] == "0x41"
    assert onednn.vector_extensions(arm) == ["asimd", "sve"]
    missing = onednn.read_cpu(str(tmp_path / "absent"), machine="x86_64")
    assert missing["model"] == "unknown" and missing["flags"] == frozenset()


def test_unset_on_avx2_without_avx512_is_chosen_on(cpuinfo):
    environ = {}
    decided = _choose(cpuinfo(EPYC_MILAN), environ)
    assert environ == {onednn.ENV_VAR: "1"}
    assert decided["source"] == "chosen"
    assert decided["onednn_opts"] == "1" and decided["onednn_requested"] is True
    assert decided["cpu_model"] == "AMD EPYC"
    assert "avx512f" not in decided["vector_extensions"]
    line = onednn.describe(decided)
    assert "TF_ENABLE_ONEDNN_OPTS=1 chosen for AMD EPYC" in line and "\n" not in line


def test_empty_value_counts_as_unset(cpuinfo):
    environ = {onednn.ENV_VAR: ""}
    decided = _choose(cpuinfo(EPYC_MILAN), environ)
    assert environ[onednn.ENV_VAR] == "1"
    assert decided["source"] == "chosen"


def test_unset_on_avx512_is_on_like_tensorflows_own_default(cpuinfo):
    environ = {}
    decided = _choose(cpuinfo(XEON_AMX), environ)
    assert environ[onednn.ENV_VAR] == "1"
    assert decided["vector_extensions"][-3:] == ["amx_tile", "amx_bf16", "amx_int8"]
    assert "AVX-512" in decided["reason"]


@pytest.mark.parametrize(
    "text, machine",
    [(OLD_XEON, "x86_64"), (GRAVITON, "aarch64")],
    ids=["x86-without-avx2", "aarch64"],
)
def test_unmeasured_cpus_keep_tensorflows_default(cpuinfo, text, machine):
    environ = {"UNRELATED": "x"}
    decided = _choose(cpuinfo(text), environ, machine=machine)
    assert environ == {"UNRELATED": "x"}
    assert decided["source"] == "tensorflow-default"
    assert decided["onednn_opts"] is None and decided["onednn_requested"] is None
    assert "TensorFlow's default" in onednn.describe(decided)


@pytest.mark.parametrize(
    "value, requested",
    [("0", False), ("false", False), ("1", True), ("TRUE", True)],
)
def test_a_users_value_is_kept_and_recorded(cpuinfo, value, requested):
    environ = {onednn.ENV_VAR: value}
    decided = _choose(cpuinfo(EPYC_MILAN), environ)
    assert environ == {onednn.ENV_VAR: value}
    assert decided["source"] == "user"
    assert decided["onednn_opts"] == value and decided["onednn_requested"] is requested
    assert f"TF_ENABLE_ONEDNN_OPTS={value!r} as set" in onednn.describe(decided)


@pytest.mark.parametrize("value", ["garbage", " 1", "2", "on"])
def test_a_value_tensorflow_ignores_is_kept_and_reported(cpuinfo, value):
    environ = {onednn.ENV_VAR: value}
    decided = _choose(cpuinfo(EPYC_MILAN), environ)
    assert environ == {onednn.ENV_VAR: value}
    assert decided["source"] == "user"
    assert decided["onednn_opts"] == value and decided["onednn_requested"] is None
    assert "not a value TensorFlow understands" in onednn.describe(decided)


def test_nothing_is_set_once_tensorflow_is_loaded(cpuinfo):
    environ = {}
    decided = _choose(cpuinfo(EPYC_MILAN), environ, modules={"tensorflow"})
    assert environ == {}
    assert decided["source"] == "tensorflow-default"
    assert "imported before" in decided["reason"]


def test_the_process_choice_is_made_once_and_kept(cpuinfo, monkeypatch):
    monkeypatch.setattr(onednn, "CPUINFO", cpuinfo(EPYC_MILAN))
    monkeypatch.setattr(onednn, "_STATE", None)
    monkeypatch.delenv(onednn.ENV_VAR, raising=False)
    first = onednn.choose(modules=set())
    assert first["source"] == "chosen" and os.environ[onednn.ENV_VAR] == "1"
    # A second call must not mistake the value it set for the user's.
    assert onednn.choose(modules=set()) == first
    recorded = onednn.state()
    recorded["cpu_model"] = "changed by the caller"
    assert onednn.state()["cpu_model"] == "AMD EPYC"
    assert json.loads(json.dumps(onednn.state()))["source"] == "chosen"  # config.json takes it as it is


def test_an_explicit_environment_does_not_become_the_process_state(cpuinfo, monkeypatch):
    monkeypatch.setattr(onednn, "_STATE", None)
    _choose(cpuinfo(XEON_AMX), {})
    assert onednn._STATE is None


# What an entry point does: import_tensorflow (twice: one line only), then the state.
_ENTRY_POINT = """
import json
from runtime.quiet import import_tensorflow
import_tensorflow(log=print)
import_tensorflow(log=print)
from runtime import onednn
print("STATE " + json.dumps(onednn.state()))
"""


# A tool whose stdout is its output: the choice is made, nothing is said.
_SILENT = """
import os
from runtime.quiet import import_tensorflow
import_tensorflow(log=None)
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
"""
# TensorFlow on its own, nothing chosen: what its default is on this CPU.
_PLAIN_TENSORFLOW = """
import json
from tensorflow.python.util import _pywrap_util_port
print("oneDNN: (not ours)")
print("STATE " + json.dumps({"onednn_enabled": bool(_pywrap_util_port.IsMklEnabled())}))
"""


@pytest.fixture(scope="module")
def entry_points():
    """One real process per setting, started together: {setting: (returncode, stdout, stderr)}."""
    settings = {"unset": None, "0": "0", "1": "1", "garbage": "garbage", "plain": None, "silent": None}
    processes = {}
    for name, value in settings.items():
        env = {key: val for key, val in os.environ.items() if key != onednn.ENV_VAR}
        if value is not None:
            env[onednn.ENV_VAR] = value
        env["PYTHONPATH"] = str(REPO)
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        code = {"plain": _PLAIN_TENSORFLOW, "silent": _SILENT}.get(name, _ENTRY_POINT)
        processes[name] = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=300)
        results[name] = (process.returncode, out, err)
    yield results


def _run_state(result):
    code, out, err = result
    assert code == 0, err
    lines = out.splitlines()
    assert len([line for line in lines if line.startswith("oneDNN: ")]) == 1, lines
    return json.loads(lines[-1][len("STATE ") :])


@pytest.mark.slow
def test_entry_point_unset_gets_this_cpus_rule(entry_points):
    decided = _run_state(entry_points["unset"])
    value, _ = onednn.recommended(onednn.read_cpu())
    if value is None:
        assert decided["source"] == "tensorflow-default"
    else:
        assert decided["source"] == "chosen" and decided["onednn_opts"] == value
        assert decided["onednn_enabled"] is True  # set before TensorFlow read it


@pytest.mark.slow
@pytest.mark.parametrize("name, enabled", [("0", False), ("1", True)])
def test_entry_point_keeps_the_users_value(entry_points, name, enabled):
    decided = _run_state(entry_points[name])
    assert decided["source"] == "user" and decided["onednn_opts"] == name
    assert decided["onednn_enabled"] is enabled


@pytest.mark.slow
def test_entry_point_with_garbage_runs_tensorflows_default(entry_points):
    decided = _run_state(entry_points["garbage"])
    assert decided["source"] == "user" and decided["onednn_requested"] is None
    assert decided["onednn_enabled"] is _run_state(entry_points["plain"])["onednn_enabled"]


@pytest.mark.slow
def test_import_tensorflow_can_choose_without_a_word(entry_points):
    code, out, err = entry_points["silent"]
    assert code == 0, err
    value, _ = onednn.recommended(onednn.read_cpu())
    assert out.splitlines() == [str(value)]
