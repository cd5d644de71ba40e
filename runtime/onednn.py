"""Choosing TensorFlow's oneDNN setting (TF_ENABLE_ONEDNN_OPTS) for the CPU, before TensorFlow loads.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it first needs it, and never again in
the process; so the choice has to be made before `import tensorflow`. TensorFlow 2.21
understands "0"/"false" and "1"/"true" (any case); anything else it ignores, keeping its
own default: on for the x86 CPUs with AVX-512 deep-learning extensions (the Xeon below),
off on AVX2-only CPUs (the EPYC below).

The rule, and what it rests on (bench/README.md, "oneDNN on or off", has the runs):

- AMD EPYC (family 25, Milan: AVX2, no AVX-512), 2026-12-01, the only CPU measured in
  the session that wrote this rule: `python -m bench.throughput --onednn-sweep` timed
  our autoencoder step with oneDNN on and off in two processes, interleaved; on was
  2.01x as fast (median of per-round ratios, range 1.48-3.25, a loaded machine), and
  Keras fit 1.36x, the matmul peak 1.50x (the textbook loop at batch 10, which is not
  what the toolkit runs, 0.94x). Issue 14 had seen 1.2-1.4x for our step on such a CPU
  before the sub-pixel decoder (models/layers.py).
- Intel Xeon with AVX-512 and AMX, 2026-11-26 (issue 14): TensorFlow turns oneDNN on
  by itself there, and all of the project's earlier benchmarks ran that way; "1" only
  restates its default. Not measured with oneDNN off.

So on x86-64 with AVX2 we ask for "1": on AVX2-only CPUs it is the measured gain, on
AVX-512 ones it is what TensorFlow does already (an AVX-512 CPU without the
deep-learning extensions, such as Skylake-SP, gets "1" unmeasured). Without AVX2, or on other architectures
(aarch64 has its own oneDNN build and defaults), nothing was measured and TensorFlow's
default stands. A value the user set is never changed, only reported.
"""

import os
import platform
import sys

ENV_VAR = "TF_ENABLE_ONEDNN_OPTS"
CPUINFO = "/proc/cpuinfo"
# Spellings TensorFlow 2.21 accepts for the variable (compared lower-cased).
OFF_VALUES = ("0", "false")
ON_VALUES = ("1", "true")
# The vector and matrix extensions worth recording, in order of generation.
VECTOR_EXTENSIONS = (
    "sse4_2",
    "avx",
    "fma",
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)
X86_MACHINES = ("x86_64", "amd64")

# The state of this process, once `choose` has run.
_STATE = None


def read_cpu(path=CPUINFO, machine=None):
    """Reads the first processor's vendor, model name and feature flags.

    Args:
      path: the cpuinfo file; a missing or unreadable file gives empty fields.
      machine: the architecture name; None asks `platform.machine()`.

    Returns:
      A dict: "machine", "vendor", "model" (strings, "unknown" when absent) and "flags"
      (a frozenset of the flag names, x86 "flags" or ARM "Features").
    """
    fields = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if not line.strip():
                    if fields:
                        break  # the first processor is enough: they are alike
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    flags = fields.get("flags") or fields.get("features") or ""
    return {
        "machine": (machine or platform.machine() or "unknown").lower(),
        "vendor": fields.get("vendor_id") or fields.get("cpu implementer") or "unknown",
        "model": fields.get("model name") or fields.get("cpu model") or "unknown",
        "flags": frozenset(flags.split()),
    }


def vector_extensions(cpu):
    """The VECTOR_EXTENSIONS a CPU has, in VECTOR_EXTENSIONS order."""
    return [name for name in VECTOR_EXTENSIONS if name in cpu["flags"]]


def recommended(cpu):
    """What this project sets TF_ENABLE_ONEDNN_OPTS to on a CPU when the user has not.

    Args:
      cpu: a dict from `read_cpu`.

    Returns:
      (value, reason): value "1", or None to leave TensorFlow's default; reason is a
      few words for the one-line report.
    """
    if cpu["machine"] not in X86_MACHINES:
        return None, f"no rule measured for {cpu['machine']}"
    if "avx2" not in cpu["flags"]:
        return None, "no rule measured for x86 without AVX2"
    if "avx512f" in cpu["flags"]:
        return "1", "AVX-512: on, as TensorFlow does for its AVX-512 CPUs"
    return "1", "AVX2 without AVX-512: measured faster on"


def _meaning(value):
    """True/False for the spellings TensorFlow understands, None for anything else."""
    lowered = value.lower()  # no stripping: TensorFlow takes " 1" for garbage too
    if lowered in OFF_VALUES:
        return False
    if lowered in ON_VALUES:
        return True
    return None


def choose(environ=None, cpuinfo=None, machine=None, modules=None):
    """Sets TF_ENABLE_ONEDNN_OPTS for this CPU unless the user set it; call before importing TensorFlow.

    For the process's own environment the choice is made once; later calls return it.
    An empty value counts as unset (that is how `VAR= command` reads). A value the user
    set, understood or not, is left exactly as it is.

    Args:
      environ: the environment to read and change; None means os.environ, and only
        then is the result kept as this process's `state()`.
      cpuinfo: path of the cpuinfo file; None means CPUINFO.
      machine: the architecture; None asks the platform.
      modules: the loaded modules, to tell whether TensorFlow is in already; None
        means sys.modules.

    Returns:
      The state dict (see `state`), also kept for `state()`.
    """
    global _STATE
    own = environ is None
    if own and _STATE is not None:
        # Already chosen for this process: a second look would take our own value for the user's.
        return dict(_STATE)
    environ = os.environ if own else environ
    modules = sys.modules if modules is None else modules
    cpu = read_cpu(CPUINFO if cpuinfo is None else cpuinfo, machine)
    user_value = environ.get(ENV_VAR)
    value, reason = recommended(cpu)
    if user_value is not None and user_value != "":
        meaning = _meaning(user_value)
        source = "user"
        if meaning is None:
            reason = "not a value TensorFlow understands (0, 1, true, false): TensorFlow's default applies"
        else:
            reason = "set by the user"
        value = user_value
    elif "tensorflow" in modules:
        # Too late: TensorFlow may have read the variable already, and setting it now
        # would make the record claim a setting the process does not have.
        source, meaning = "tensorflow-default", None
        reason = "TensorFlow was imported before the choice could be made"
        value = None
    elif value is None:
        source, meaning = "tensorflow-default", None
    else:
        environ[ENV_VAR] = value
        source, meaning = "chosen", _meaning(value)
    decided = {
        "cpu_model": cpu["model"],
        "cpu_vendor": cpu["vendor"],
        "machine": cpu["machine"],
        "vector_extensions": vector_extensions(cpu),
        "onednn_opts": value,
        "onednn_requested": meaning,
        "source": source,
        "reason": reason,
    }
    if own:
        _STATE = decided
    return dict(decided)


def state():
    """What was decided for this process, for config.json; runs `choose` first if nobody has.

    Returns:
      A dict: "cpu_model", "cpu_vendor", "machine", "vector_extensions" (list),
      "onednn_opts" (the variable's value, None when unset), "onednn_requested" (True
      for on, False for off, None when TensorFlow's default decides), "source"
      ("chosen" by this module, set by the "user", or "tensorflow-default": left unset)
      and "reason" (a few words), plus "onednn_enabled", what TensorFlow reports, once
      TensorFlow is imported.
    """
    result = dict(_STATE) if _STATE is not None else choose()
    if "tensorflow" in sys.modules:
        result["onednn_enabled"] = tensorflow_onednn_enabled()
    return result


def tensorflow_onednn_enabled():
    """Whether the loaded TensorFlow runs oneDNN (asking it makes TensorFlow read the variable)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def describe(decided):
    """One line for the terminal about a state dict from `choose`."""
    value = decided["onednn_opts"]
    extensions = (
        ", ".join(e for e in decided["vector_extensions"] if e.startswith(("avx", "amx", "sve")))
        or "none of AVX2/AVX-512/AMX"
    )
    cpu = f"{decided['cpu_model']} ({extensions})"
    if decided["source"] == "chosen":
        return f"oneDNN: {ENV_VAR}={value} chosen for {cpu}: {decided['reason']}; set {ENV_VAR}=0 to turn it off"
    if decided["source"] == "user":
        return f"oneDNN: {ENV_VAR}={value!r} as set, {decided['reason']}; CPU {cpu}"
    return f"oneDNN: TensorFlow's default on {cpu} ({decided['reason']})"
