"""The training loop both scripts share: steps, progress, saves, signals, guards."""

import math
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

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
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        self.signum = signum


def format_duration(seconds):
    """`h:mm:ss` for a number of seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_loop(
    sess,
    train_op,
    loss,
    start_step,
    total_steps,
    steps_per_epoch,
    batch_size,
    checkpointer,
    save_every=0,
    writer=None,
    summary_op=None,
    summary_every=0,
    on_epoch_end=None,
    log=print,
    progress_every_secs=5.0,
    cluster_step=None,
):
    """Runs `train_op` from start_step to total_steps.

    Each run of train_op must advance the graph's global step by exactly one; the loop
    keeps the count in Python, so it never has to read the variable back. In a cluster
    (`cluster_step`) other workers advance it too: each step then reports the global step
    it reached, and saves, summaries and epoch ends happen when that crosses their boundary.

    Args:
      sess: the session, with variables initialised or restored and input started.
      train_op: the op that trains one batch.
      loss: scalar loss tensor, fetched with every step and checked for NaN and inf.
      start_step: the global step the run starts from (0, or the restored one).
      total_steps: the step to stop at.
      steps_per_epoch: steps that make one pass over the training data.
      batch_size: images per step, for the throughput figure.
      checkpointer: a `runtime.checkpoints.Checkpointer`.
      save_every: also save every this many steps; 0 saves only at the end.
      writer: a summary FileWriter, or None.
      summary_op: a merged summary op run every summary_every steps.
      summary_every: steps between summaries; 0 disables them.
      on_epoch_end: called as on_epoch_end(epoch, step) after each whole epoch.
      log: function that prints one line.
      progress_every_secs: seconds between progress lines.
      cluster_step: a `runtime.cluster.TrainStep` for a task of a cluster, else None.
        Without a checkpointer (a non-chief worker) nothing is saved.

    Returns:
      A LoopResult; its last_checkpoint is None when no step was left to run.

    Raises:
      Interrupted: after SIGINT or SIGTERM, once the step under way is done and saved.
      TrainingDiverged: when the loss is NaN or inf; nothing is saved, so the last
        good checkpoint stays the latest.
    """
    step = start_step
    last_saved, saved_step = None, None
    train_seconds = 0.0
    last_progress = time.monotonic()
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    with _StopOnSignal() as stop:
        while step < total_steps and stop.signum is None:
            want_summary = (
                writer is not None and summary_op is not None and summary_every and (step + 1) % summary_every == 0
            )
            fetches = [train_op, loss, summary_op] if want_summary else [train_op, loss]
            began = time.monotonic()
            previous = step
            if cluster_step is None:
                values = sess.run(fetches)
                step += 1
            else:
                ran = cluster_step.run(sess, fetches)
                if ran is None:  # the cluster ended the run (sync mode: the chief closed its queue)
                    break
                values, step, _ = ran
            train_seconds += time.monotonic() - began
            loss_value = float(values[1])
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss is {loss_value} at step {step}; stopped without saving "
                    "(try a lower --learning-rate); the last checkpoint is untouched"
                )
            if want_summary:
                writer.add_summary(values[2], step)
            now = time.monotonic()
            if now - last_progress >= progress_every_secs or step == total_steps:
                last_progress = now
                done = step - start_step if cluster_step is None else cluster_step.own_steps
                rate = _images_per_second(done, batch_size, train_seconds)
                eta = (total_steps - step) * batch_size / rate if rate else 0.0
                log(
                    f"epoch {min(step // steps_per_epoch + 1, num_epochs)}/{num_epochs}  "
                    f"step {step}/{total_steps}  loss {loss_value:.4f}  "
                    f"{rate:,.0f} images/s  ETA {format_duration(eta)}"
                )
            if step // steps_per_epoch > previous // steps_per_epoch and on_epoch_end is not None:
                on_epoch_end(step // steps_per_epoch, step)
            if save_every and step // save_every > previous // save_every and checkpointer is not None:
                last_saved, saved_step = checkpointer.save(sess, step), step
            if cluster_step is not None:
                cluster_step.after_step(sess, step)  # the chief lets the workers past an epoch it has evaluated
        if cluster_step is not None:
            step = cluster_step.settle(sess, step)  # tickets other workers still give back: the final step
        if step > start_step and saved_step != step and checkpointer is not None:
            last_saved = checkpointer.save(sess, step)
    if stop.signum is not None:
        if writer is not None:
            writer.flush()
        saved = f"saved {last_saved}" if last_saved else "nothing new to save"
        log(
            f"{signal.Signals(stop.signum).name}: stopped at step {step}/{total_steps}, {saved}; "
            "run the same command again to resume"
        )
        raise Interrupted(stop.signum)
    own = step - start_step if cluster_step is None else cluster_step.own_steps
    rate = _images_per_second(own, batch_size, train_seconds)
    return LoopResult(start_step, step, rate, last_saved, None if cluster_step is None else own)


def _images_per_second(steps, batch_size, seconds):
    return steps * batch_size / seconds if seconds else 0.0


def finite_or_none(value):
    """A float for JSON, with NaN and inf as None."""
    value = float(value)
    return value if np.isfinite(value) else None


def train_graph(
    sess, graph, args, checkpointer, start_step, total_steps, steps_per_epoch, writer, summary_op, on_epoch_end
):
    """`train_loop` over a run's graph, with the run's own flags.

    Args:
      sess, checkpointer, start_step, total_steps, steps_per_epoch, writer, summary_op,
        on_epoch_end: as `train_loop` takes them.
      graph: the structure autoencoder.graph.build or transfer.graph.build returns: its
        train_op, loss and cluster_step are trained.
      args: the parsed flags: --batch-size, --save-every and --summary-every are read.

    Returns:
      train_loop's LoopResult.
    """
    return train_loop(
        sess,
        graph.train_op,
        graph.loss,
        start_step,
        total_steps,
        steps_per_epoch,
        args.batch_size,
        checkpointer,
        save_every=args.save_every,
        writer=writer,
        summary_op=summary_op,
        summary_every=args.summary_every,
        on_epoch_end=on_epoch_end,
        cluster_step=graph.cluster_step,
    )
