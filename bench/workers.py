"""Contenders that run in another process, so that each can have its own oneDNN setting.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once per process, so "Keras fit with oneDNN on"
and "Keras fit with oneDNN off" cannot share a process. A worker is a Python process
(`python -m bench.workers`) started with one setting; it builds the contenders it is
asked for (bench/contenders.py, unchanged) and runs their windows on request. The
benchmark holds a `RemoteContender` for each, with the same warm_up/reserve/run/close
interface as a local one, so the interleaving in bench/throughput.py is the same for
both: only one window runs at a time, whichever process it is in, and the workers sit
blocked on their input between windows.

Protocol: one JSON object per line each way. The worker's replies go to a private copy
of its stdout; its own file descriptor 1 is pointed at stderr, so that nothing Keras or
TensorFlow prints can break a reply.
"""

import json
import os
import subprocess
import sys
import tempfile

ENV_VAR = "TF_ENABLE_ONEDNN_OPTS"


class WorkerError(RuntimeError):
    """A worker died or answered with an error; the message carries its stderr tail."""


class Worker:
    """One worker process with one oneDNN setting.

    Args:
      name: a label for messages, e.g. "onednn-off".
      onednn: "0" or "1" to set TF_ENABLE_ONEDNN_OPTS, None to remove it (TensorFlow's
        default for the CPU).
      environ: the environment to start from (the user's, before anything was chosen).
    """

    def __init__(self, name, onednn, environ):
        self.name = name
        env = dict(environ)
        env.pop(ENV_VAR, None)
        if onednn is not None:
            env[ENV_VAR] = onednn
        env["TF_OVERRIDE_GLOBAL_THREADPOOL"] = "1"  # as in bench.throughput: per-session pools
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Lives as long as the worker (closed in close()), so no `with`.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.workers"], cwd=root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )  # fmt: skip
        self.hello = None
        self._pending = []  # keys whose "add" replies have not been read yet, in order
        self.added = {}  # key -> its "add" reply

    def add(self, key, kind, options):
        """Asks for a contender to be built and warmed up, without waiting for it."""
        self.send({"op": "add", "key": key, "kind": kind, "options": options})
        self._pending.append(key)

    def wait_added(self, key):
        """The "add" reply of `key`, reading the replies that come before it."""
        while key not in self.added:
            if not self._pending:
                raise WorkerError(f"worker {self.name}: {key} was never added")
            self.added[self._pending.pop(0)] = self.receive()
        return self.added[key]

    def send(self, message):
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._died()) from None

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"worker {self.name}: {reply['error']}")
        return reply

    def request(self, message):
        """Sends a message and returns its reply, after any outstanding "add" replies."""
        while self._pending:
            self.wait_added(self._pending[0])
        self.send(message)
        return self.receive()

    def start(self):
        """Waits for the worker's first line: its TensorFlow's oneDNN state."""
        self.hello = self.receive()
        return self.hello

    def _died(self):
        self.process.poll()
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].strip()
        return f"worker {self.name} exited (code {self.process.returncode}): {tail or 'no output'}"

    def close(self):
        if self.process.poll() is None:
            try:
                self.send({"op": "quit"})
                self.process.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._stderr.close()


class RemoteContender:
    """A contender built and run inside a Worker; `kind` and `options` say which (see `_make`)."""

    def __init__(self, worker, name, kind, **options):
        self.worker = worker
        self.name = name
        self.kind = kind
        self.options = options
        self.batch_size = options.get("batch_size")
        self._sent = False

    def prepare(self):
        """Asks the worker to build and warm up, without waiting: workers build while others do."""
        if not self._sent:
            self.worker.add(self.name, self.kind, self.options)
            self._sent = True

    def warm_up(self):
        self.prepare()
        reply = self.worker.wait_added(self.name)
        for attribute in ("num_weights", "num_trainable"):
            if attribute in reply:
                setattr(self, attribute, reply[attribute])

    def reserve(self, steps):
        self.worker.request({"op": "reserve", "key": self.name, "steps": steps})

    def run(self, steps):
        from bench.contenders import Sample

        reply = self.worker.request({"op": "run", "key": self.name, "steps": steps})
        return Sample(reply["units"], reply["wall"], reply["cpu"])

    def close(self):
        pass  # the worker closes its contenders when it quits


def _make(kind, name, options, dataset):
    """A local contender of bench.contenders from its kind; runs in the worker."""
    from bench import contenders as c

    batch = options.get("batch_size")
    if kind == "ae/ours":
        return c.OursAutoencoder(name, dataset, batch, options["inter"], options["intra"])
    if kind == "ae/textbook":
        return c.TextbookAutoencoder(name, dataset, batch)
    if kind == "ae/keras":
        return c.KerasAutoencoder(name, dataset, batch)
    if kind == "ae/keras-jit":
        from bench.experiments import KerasJitAutoencoder

        return KerasJitAutoencoder(name, dataset, batch)
    if kind == "transfer/textbook":
        return c.TextbookTransfer(name, dataset, batch)
    if kind == "transfer/keras":
        return c.KerasFrozen(name, dataset, batch)
    if kind == "peak/session":
        return c.MatmulSession(name, options["size"])
    raise ValueError(f"unknown contender kind {kind!r}")


def serve():
    """The worker's loop: reads requests from stdin until "quit" or end of input."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(**fields):
        replies.write(json.dumps(fields) + "\n")
        replies.flush()

    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    from data.sources import load_sample

    tf.get_logger().setLevel("ERROR")
    reply(onednn=bool(_pywrap_util_port.IsMklEnabled()), env=os.environ.get(ENV_VAR), pid=os.getpid())
    dataset = None
    contenders = {}
    for line in sys.stdin:
        message = json.loads(line)
        op = message["op"]
        if op == "quit":
            break
        try:
            if op == "add":
                if dataset is None:
                    dataset = load_sample()
                contender = _make(message["kind"], message["key"], message["options"], dataset)
                contender.warm_up()
                contenders[message["key"]] = contender
                extra = {
                    name: getattr(contender, name)
                    for name in ("num_weights", "num_trainable")
                    if hasattr(contender, name)
                }
                reply(ok=True, **extra)
            elif op == "reserve":
                contenders[message["key"]].reserve(message["steps"])
                reply(ok=True)
            elif op == "run":
                sample = contenders[message["key"]].run(message["steps"])
                reply(units=sample.units, wall=sample.wall, cpu=sample.cpu)
            else:
                reply(error=f"unknown op {op!r}")
        except Exception as error:  # noqa: BLE001 (any failure is reported to the benchmark, which stops with it)
            reply(error=f"{op} {message.get('key')}: {type(error).__name__}: {error}")
    replies.close()
    os._exit(0)  # closing a dozen sessions measures nothing and can take seconds


if __name__ == "__main__":
    serve()
