"""The training loop both scripts share: steps, progress, saves, signals, guards."""

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime import quiet
from runtime.errors import UserError


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """A signal stopped the run after it saved; `signum` says which."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


@dataclass
class LoopResult:
    """What a call to `train_loop` did."""

    start_step: int
    final_step: int
    images_per_sec: float
    last_checkpoint: str | None
    own_steps: int | None = None  # in a cluster: the steps this task ran that counted


class _StopOnSignal:
    """Turns the first SIGINT or SIGTERM into a request to stop at the next step boundary.

    A second one ends the process at once, for a user who will not wait: `os._exit`, not
    an exception, because unwinding Python while TensorFlow's threads run (a save under
    way) can abort the process. What a killed save leaves behind is cleared at the next
    start, as after `kill -9`.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        quiet.stop_if_signalled()  # a signal before the loop whose Stopped was lost on the way
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        # Once a stop was asked for, any later signal (while the run saves, reports and
        # exits) ends the process at once rather than unwinding through TensorFlow.
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if self.signum is None else self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            print(
                f"{signal.Signals(signum).name} again: exiting at once; the newest complete checkpoint is intact",
                file=sys.stderr,
            )
            quiet.exit_now(128 + signum)
        self.signum = signum


def format_duration(seconds):
    """`h:mm:ss` for a number of seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass(frozen=True)
class Span:
    """The steps a call to `train_loop` runs: from start_step to total_steps, in epochs of steps_per_epoch."""

    start_step: int
    total_steps: int
    steps_per_epoch: int

    @property
    def num_epochs(self):
        return math.ceil(self.total_steps / self.steps_per_epoch)


@dataclass(frozen=True)
class GraphValues:
    """The training values every training graph is built with (flags of the same names); each
    graph's Hyperparameters adds its own (autoencoder.graph, transfer.graph).

    Attributes:
      batch_size: images per step.
      learning_rate: Adam's.
      seed: of the graph's own randomness (the autoencoder's noise, the classifier's shift).
      epochs: a cluster holds its workers at each epoch's end (total_steps // epochs).
    """

    batch_size: int
    learning_rate: float
    seed: int = 0
    epochs: int = 1


@dataclass(frozen=True)
class LoopSettings:
    """The loop's flags (of the same names): images per step, for the throughput figure;
    steps between saves (0: only at the end) and between summaries (0: none)."""

    batch_size: int
    save_every: int = 0
    summary_every: int = 0


@dataclass(frozen=True)
class LoopHooks:
    """What the loop reports to.

    Attributes:
      writer: a summary FileWriter, or None.
      summary_op: a merged summary op run every summary_every steps.
      on_epoch_end: called as on_epoch_end(epoch, step) after each whole epoch.
      log: function that prints one line.
      progress_every_secs: seconds between progress lines.
    """

    writer: object = None
    summary_op: object = None
    on_epoch_end: Callable | None = None
    log: Callable = print
    progress_every_secs: float = 5.0


class LocalStep:
    """A local run's step, behind the interface of runtime.cluster.TrainStep.

    Each run of the train op advances the global step by exactly one, so the step is
    counted here and never read back; no other worker holds the run or still owes a step.
    """

    def __init__(self, op, start_step):
        self.op = op
        self.own_steps = 0
        self._step = start_step

    def run(self, sess, fetches):
        """One step: (values of fetches, global step after it, counted)."""
        values = sess.run(fetches)
        self._step += 1
        self.own_steps += 1
        return values, self._step, True

    def after_step(self, sess, step):
        """Nothing to let through: no other worker waits for this one."""

    def settle(self, sess, step):
        """No step is owed by another worker: the step this one reached."""
        return step


def train_loop(sess, trainer, loss, span, settings, checkpointer, hooks=None):
    """Runs the trainer's op from span.start_step to span.total_steps.

    The local and the cluster step have one interface (LocalStep, runtime.cluster.TrainStep):
    each step reports the global step it reached, which in a cluster other workers advance
    too; saves, summaries and epoch ends happen when that crosses their boundary.

    Args:
      sess: the session, with variables initialised or restored and input started.
      trainer: a LocalStep, or a task's runtime.cluster.TrainStep in a cluster.
      loss: scalar loss tensor, fetched with every step and checked for NaN and inf.
      span: the Span of steps to run.
      settings: the LoopSettings.
      checkpointer: a `runtime.checkpoints.Checkpointer`; None (a non-chief worker) saves nothing.
      hooks: the LoopHooks (default: none but progress lines printed every 5 s).

    Returns:
      A LoopResult; its last_checkpoint is None when no step was left to run.

    Raises:
      Interrupted: after SIGINT or SIGTERM, once the step under way is done and saved.
      TrainingDiverged: when the loss is NaN or inf; nothing is saved, so the last
        good checkpoint stays the latest.
    """
    return _Loop(sess, trainer, loss, span, settings, checkpointer, hooks or LoopHooks()).run()


class _Loop:
    """The state of one `train_loop` call."""

    def __init__(self, sess, trainer, loss, span, settings, checkpointer, hooks):
        self.sess, self.trainer, self.loss, self.span = sess, trainer, loss, span
        self.settings, self.checkpointer, self.hooks = settings, checkpointer, hooks
        self.step = span.start_step
        self.last_saved, self.saved_step = None, None
        self.train_seconds = 0.0
        self.last_progress = time.monotonic()

    def run(self):
        with _StopOnSignal() as stop:
            while self.step < self.span.total_steps and stop.signum is None:
                if not self._one_step():  # the cluster ended the run (sync mode: the chief closed its queue)
                    break
            self.step = self.trainer.settle(self.sess, self.step)  # tickets other workers still give back
            if self.step > self.span.start_step and self.saved_step != self.step and self.checkpointer is not None:
                self.last_saved = self.checkpointer.save(self.sess, self.step)
        if stop.signum is not None:
            self._interrupted(stop.signum)
        rate = _images_per_second(self.trainer.own_steps, self.settings.batch_size, self.train_seconds)
        own = None if isinstance(self.trainer, LocalStep) else self.trainer.own_steps
        return LoopResult(self.span.start_step, self.step, rate, self.last_saved, own)

    def _one_step(self):
        """Runs one step and what follows it; False when the cluster ended the run instead."""
        hooks, every = self.hooks, self.settings.summary_every
        want_summary = (
            hooks.writer is not None and hooks.summary_op is not None and every and (self.step + 1) % every == 0
        )
        fetches = [self.trainer.op, self.loss, hooks.summary_op] if want_summary else [self.trainer.op, self.loss]
        began, previous = time.monotonic(), self.step
        ran = self.trainer.run(self.sess, fetches)
        if ran is None:
            return False
        values, self.step, _ = ran
        self.train_seconds += time.monotonic() - began
        loss_value = float(values[1])
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"loss is {loss_value} at step {self.step}; stopped without saving "
                "(try a lower --learning-rate); the last checkpoint is untouched"
            )
        if want_summary:
            hooks.writer.add_summary(values[2], self.step)
        self._progress(loss_value)
        self._boundaries(previous)
        return True

    def _progress(self, loss_value):
        now, span = time.monotonic(), self.span
        if now - self.last_progress < self.hooks.progress_every_secs and self.step != span.total_steps:
            return
        self.last_progress = now
        batch_size = self.settings.batch_size
        rate = _images_per_second(self.trainer.own_steps, batch_size, self.train_seconds)
        eta = (span.total_steps - self.step) * batch_size / rate if rate else 0.0
        self.hooks.log(
            f"epoch {min(self.step // span.steps_per_epoch + 1, span.num_epochs)}/{span.num_epochs}  "
            f"step {self.step}/{span.total_steps}  loss {loss_value:.4f}  "
            f"{rate:,.0f} images/s  ETA {format_duration(eta)}"
        )

    def _boundaries(self, previous):
        """The epoch's end and a save, when the step crossed their boundary; then lets the workers on."""
        per_epoch, save_every = self.span.steps_per_epoch, self.settings.save_every
        if self.step // per_epoch > previous // per_epoch and self.hooks.on_epoch_end is not None:
            self.hooks.on_epoch_end(self.step // per_epoch, self.step)
        if save_every and self.step // save_every > previous // save_every and self.checkpointer is not None:
            self.last_saved, self.saved_step = self.checkpointer.save(self.sess, self.step), self.step
        self.trainer.after_step(self.sess, self.step)  # the chief lets the workers past an epoch it has evaluated

    def _interrupted(self, signum):
        if self.hooks.writer is not None:
            self.hooks.writer.flush()
        saved = f"saved {self.last_saved}" if self.last_saved else "nothing new to save"
        self.hooks.log(
            f"{signal.Signals(signum).name}: stopped at step {self.step}/{self.span.total_steps}, {saved}; "
            "run the same command again to resume"
        )
        raise Interrupted(signum)


def _images_per_second(steps, batch_size, seconds):
    return steps * batch_size / seconds if seconds else 0.0


def finite_or_none(value):
    """A float for JSON, with NaN and inf as None."""
    value = float(value)
    return value if np.isfinite(value) else None


def train_graph(sess, graph, span, settings, checkpointer, hooks=None):
    """`train_loop` over a run's graph: its train_op (in a cluster its cluster_step) and its loss.

    Args:
      sess, span, settings, checkpointer, hooks: as `train_loop` takes them.
      graph: the structure autoencoder.graph.build or transfer.graph.build returns.

    Returns:
      train_loop's LoopResult.
    """
    trainer = graph.cluster_step if graph.cluster_step is not None else LocalStep(graph.train_op, span.start_step)
    return train_loop(sess, trainer, graph.loss, span, settings, checkpointer, hooks)
