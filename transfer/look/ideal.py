"""Ideal class images: the input the network is surest belongs to a class.

The input is a variable in the graph and the only thing the optimizer may change: Adam's
var_list holds it alone, the network's variables are restored from the checkpoint and
checked bit for bit at the end. Each image maximises one class's log-probability (or
logit) minus a total-variation penalty, which keeps neighbouring pixels alike; without it
the optimum is high-frequency noise. Pixels stay in [0, 1], by clipping after each step
or through a sigmoid. All classes are optimised together, one image each: the losses are
summed, and as the network has no batch coupling each image gets its own gradient.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from runtime import cli, paths
from runtime.errors import UserError
from runtime.options import Option
from runtime.summaries import scalars
from transfer.look import common

# The command as `python -m transfer.look` lists it; its flags are OPTIONS below.
NAME = "ideal"
HELP = "optimise an input image per class until the network is sure of it"
DESCRIPTION = (
    "Optimise one input image per class (a graph variable; the network frozen) with Adam to maximise "
    "the class's log-probability or logit, with a total-variation penalty. Writes ideal.png, ideal.json and "
    "TensorBoard images."
)

v1 = tf.compat.v1

OBJECTIVES = ("logprob", "logit")
RANGES = ("clip", "sigmoid")
INPUT_NAME = "look/ideal_input"
RESULT_FILES = ("ideal.json", "ideal.png")
# A sigmoid's inverse at 0 or 1 is infinite: a given start image is pulled in by this much.
_SIGMOID_MARGIN = 1e-3


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """How each image is optimised: what it maximises, how its pixels stay in range, the step and the priors.

    Attributes:
      objective: "logprob" (log-softmax of the class) or "logit" (its raw logit).
      value_range: "clip" (clip to [0, 1] after every step) or "sigmoid" (image = sigmoid(variable)).
      learning_rate: Adam's learning rate.
      l2_weight: weight of the squared L2 norm of the image, a second prior that pulls pixels
        towards the black background of the digits.
      jitter: the image the loss sees is rolled by up to this many pixels each step (seeded
        by the graph seed), so that the optimum cannot rest on single pixels; 0 turns it off.
        Probabilities are always reported for the image as it is.
    """

    objective: str
    value_range: str
    learning_rate: float
    l2_weight: float
    jitter: int


@dataclasses.dataclass(frozen=True)
class Settings:
    """The rest of the ideal command's flags: which classes, the TV weight, the start, how long, what to report.

    Attributes:
      classes: --classes, a comma list of class names or indices, "all", or None for the run's default.
      tv_weight: the total-variation weight.
      steps: Adam steps.
      start: an image file or "skimage:NAME" to start from, or None for noise.
      noise: the amplitude of the starting noise around mid-grey.
      target_probability: the step where each image first reaches this probability is recorded.
      baseline: also optimise each class at TV weight 0 from the same start.
      summary_every: steps between TensorBoard images.
    """

    classes: str | None
    tv_weight: float
    steps: int
    start: str | None
    noise: float
    target_probability: float
    baseline: bool
    summary_every: int


def initial_images(shape, count, seed, noise, start=None):
    """The starting images [count, *shape]: a given image repeated, or seeded uniform noise.

    Noise is centred on mid-grey, 0.5 +- noise, so that no class gets a head start.
    """
    if start is not None:
        return np.repeat(start[np.newaxis].astype(np.float32), count, axis=0)
    rng = np.random.default_rng(seed)
    return (0.5 + noise * rng.uniform(-1.0, 1.0, (count, *shape))).astype(np.float32)


def build_graph(run, classes, tv_weights, start, optimisation):
    """Builds the optimisation into the current graph.

    Args:
      run: the common.Run whose network it is.
      classes: class index per image [K].
      tv_weights: total-variation weight per image [K].
      start: float32 [K, *image_shape] in [0, 1], the starting images.
      optimisation: the Optimisation.

    Returns:
      A dict: input (the variable), images [K, ...] in [0, 1], probabilities [K, classes],
      objective [K], total_variation [K], loss, step (train op, followed by the clip).
    """
    value_range = optimisation.value_range
    variable = v1.get_variable(
        INPUT_NAME, initializer=tf.constant(_initial_value(start, value_range), tf.float32), use_resource=True
    )
    images = tf.sigmoid(variable) if value_range == "sigmoid" else variable
    logits = common.build(run, images)["logits"]
    target, optimised = _objectives(run, images, logits, classes, optimisation)
    total_variation = tf.image.total_variation(images)
    loss = tf.reduce_sum(-optimised + tf.constant(tv_weights, tf.float32) * total_variation)
    if optimisation.l2_weight:
        loss += optimisation.l2_weight * tf.reduce_sum(tf.square(images))
    step = _train_step(loss, variable, optimisation.learning_rate, value_range)
    return {
        "input": variable,
        "images": images,
        "probabilities": tf.nn.softmax(logits),
        "objective": target,
        "total_variation": total_variation,
        "loss": loss,
        "step": step,
    }


def _initial_value(start, value_range):
    """The input variable's starting value: the start images, or for "sigmoid" their inverse sigmoid."""
    if value_range != "sigmoid":
        return start
    unconstrained = np.clip(start, _SIGMOID_MARGIN, 1.0 - _SIGMOID_MARGIN)
    return np.log(unconstrained) - np.log1p(-unconstrained)


def _objectives(run, images, logits, classes, optimisation):
    """Each image's objective as reported (of the image as it is) and as optimised (of the rolled image).

    Returns:
      (reported [K], optimised [K]); one tensor twice when jitter is 0.
    """
    chosen = tf.stack([tf.range(len(classes)), tf.constant(classes, tf.int32)], axis=1)
    logprob, jitter = optimisation.objective == "logprob", optimisation.jitter

    def objective_of(class_logits):
        return tf.gather_nd(tf.nn.log_softmax(class_logits) if logprob else class_logits, chosen)

    target = objective_of(logits)
    if not jitter:
        return target, target
    shift = tf.random.uniform([2], -jitter, jitter + 1, dtype=tf.int32)
    with v1.variable_scope(v1.get_variable_scope(), reuse=True):
        return target, objective_of(common.build(run, tf.roll(images, shift, axis=[1, 2]))["logits"])


def _train_step(loss, variable, learning_rate, value_range):
    """An Adam step on the input alone, followed for "clip" by clipping the input back into [0, 1]."""
    optimizer = v1.train.AdamOptimizer(learning_rate, name="look_adam")
    update = optimizer.minimize(loss, var_list=[variable])
    if value_range == "clip":
        with tf.control_dependencies([update]):
            update = variable.assign(tf.clip_by_value(variable, 0.0, 1.0)).op
    return update


def optimise(sess, graph, classes, steps, target_probability=0.99, writer=None, summary_every=0, log=print):
    """Runs the optimisation; returns the final images and per-image results.

    Args:
      sess: a session with the network restored and the input initialised.
      graph: the dict from build_graph.
      classes: class index per image.
      steps: Adam steps.
      target_probability: the step where an image first reaches this probability is recorded.
      writer: optional summary FileWriter for the images and probabilities along the way.
      summary_every: steps between TensorBoard summaries (0: start and end only).
      log: function that prints one line.

    Returns:
      (float32 images [K, ...], list of dicts: probability, objective, total_variation,
      first_step_at_target or None).
    """
    rows = np.arange(len(classes))
    first_at_target = [None] * len(classes)
    record = _recorder(sess, graph, classes, writer)
    record(0)
    report_every = max(1, steps // 5)
    for step in range(1, steps + 1):
        probabilities, _ = sess.run([graph["probabilities"], graph["step"]])
        # These probabilities are of the image before this step's update, i.e. after step - 1.
        _note_reached(first_at_target, probabilities[rows, classes], target_probability, step - 1)
        if writer is not None and summary_every and step % summary_every == 0 and step != steps:
            record(step)
        if step % report_every == 0:
            log(f"step {step}/{steps}: mean class probability {probabilities[rows, classes].mean():.4f}")
    probabilities = record(steps)
    images, objective, tv = sess.run([graph["images"], graph["objective"], graph["total_variation"]])
    _note_reached(first_at_target, probabilities[rows, classes], target_probability, steps)
    results = [
        {
            "probability": float(probabilities[index, classes[index]]),
            "objective": float(objective[index]),
            "total_variation": float(tv[index]),
            "first_step_at_target": first_at_target[index],
        }
        for index in range(len(classes))
    ]
    return images, results


def _recorder(sess, graph, classes, writer):
    """A function record(step): fetches the images' probabilities and, given a writer, writes their summaries."""
    rows = np.arange(len(classes))
    fetches = [graph["images"], graph["probabilities"], graph["total_variation"]]

    def record(step):
        images, probabilities, tv = sess.run(fetches)
        if writer is not None:
            writer.add_summary(
                common.image_summary("ideal/images", common.tile([common.display(i) for i in images], len(classes))),
                step,
            )
            writer.add_summary(
                scalars(
                    {
                        "ideal/mean_probability": probabilities[rows, classes].mean(),
                        "ideal/mean_total_variation": tv.mean(),
                    }
                ),
                step,
            )
        return probabilities

    return record


def _note_reached(first_at_target, probabilities, target_probability, step):
    """Records the step for every image that reaches the target probability for the first time."""
    for index, probability in enumerate(probabilities):
        if first_at_target[index] is None and probability >= target_probability:
            first_at_target[index] = step


OPTIONS = (
    Option(
        "--classes",
        default=None,
        help="comma list of class names or indices, or all (default: all the run's classes; tabby,zebra for an "
        "ImageNet checkpoint)",
    ),
    Option("--objective", choices=OBJECTIVES, default="logprob", help="what to maximise (default: %(default)s)"),
    Option("--tv-weight", type=float, default=0.002, help="total-variation weight, >= 0 (default: %(default)s)"),
    Option(
        "--l2-weight",
        type=float,
        default=0.0,
        help="weight of the squared L2 norm of the image (a pull towards black), >= 0 (default: %(default)s)",
    ),
    Option(
        "--range",
        dest_name="value_range",
        choices=RANGES,
        default="clip",
        help="keep pixels in [0, 1] by clipping after each step or through a sigmoid (default: %(default)s)",
    ),
    Option("--steps", type=cli.positive_int, default=300, help="Adam steps (default: %(default)s)"),
    Option("--learning-rate", type=cli.positive_float, default=0.05, help="Adam learning rate (default: %(default)s)"),
    Option(
        "--start",
        default=None,
        help="start from this image file (28x28 grayscale for the digits) or skimage:NAME instead of noise",
    ),
    Option(
        "--noise",
        type=float,
        default=0.25,
        help="amplitude of the starting noise around mid-grey, in [0, 0.5] (default: %(default)s)",
    ),
    Option(
        "--target-probability",
        type=float,
        default=0.99,
        help="record the step where each image first reaches this probability (default: %(default)s)",
    ),
    Option(
        "--jitter",
        type=cli.non_negative_int,
        default=0,
        help="roll the image the loss sees by up to N pixels each step (0: off; default: %(default)s)",
    ),
    Option(
        "--baseline",
        action="store_true",
        help="also run the same optimisation with the TV weight at 0, from the same start, and report both",
    ),
    Option(
        "--summary-every",
        type=cli.non_negative_int,
        default=25,
        help="steps between TensorBoard images (default: %(default)s)",
    ),
)
# What run takes, each made once from the parsed flags (runtime.options.Flags.record).
RECORDS = (common.Shared, Settings, Optimisation)


def _validate(settings, optimisation):
    for flag, value in (("--tv-weight", settings.tv_weight), ("--l2-weight", optimisation.l2_weight)):
        if not 0.0 <= value < float("inf"):
            raise UserError(f"{flag} must be a number >= 0, got {value}")
    if not 0.0 <= settings.noise <= 0.5:
        raise UserError(f"--noise must be in [0, 0.5] so the start stays in [0, 1], got {settings.noise}")
    if not 0.0 < settings.target_probability <= 1.0:
        raise UserError(f"--target-probability must be in (0, 1], got {settings.target_probability}")


def _arms(settings, seed, image_shape, classes, start_image):
    """The images to optimise: one per class, and with --baseline one more per class at TV weight 0.

    Returns:
      (class index per image, TV weight per image, starting images float32 [K, *image_shape]).
    """
    arms = [("tv", settings.tv_weight)] + ([("tv0", 0.0)] if settings.baseline else [])
    image_classes = [index for _ in arms for index in classes]
    tv_weights = [weight for _, weight in arms for _ in classes]
    # Every arm starts from the same images, so the TV-0 baseline differs only in its weight.
    start = np.concatenate([initial_images(image_shape, len(classes), seed, settings.noise, start_image)] * len(arms))
    return image_classes, tv_weights, start


def _print_plan(settings, optimisation, classes):
    print(
        f"optimising {len(classes)} class image(s){' and their TV-0 baselines' if settings.baseline else ''}: "
        f"{optimisation.objective}, TV weight {settings.tv_weight:g}, {optimisation.value_range}, "
        f"{settings.steps} Adam steps at {optimisation.learning_rate:g}"
    )


def _optimise_with_summaries(sess, graph, settings, image_classes, out_dir):
    """optimise, with its TensorBoard images written to the output dir; returns (images, results, seconds)."""
    writer = v1.summary.FileWriter(out_dir)
    began = time.monotonic()
    images, results = optimise(
        sess, graph, image_classes, settings.steps, settings.target_probability, writer, settings.summary_every
    )
    seconds = time.monotonic() - began
    writer.close()
    return images, results, seconds


def _per_class(settings, names, classes, results):
    """One entry per class for ideal.json: its result, and with --baseline its TV-0 result and the TV ratio."""
    per_class = []
    for position, index in enumerate(classes):
        entry = {"class": names[index], "index": index, "steps": settings.steps, **results[position]}
        if settings.baseline:
            baseline = results[len(classes) + position]
            entry["baseline_tv0"] = baseline
            entry["tv_ratio"] = (
                entry["total_variation"] / baseline["total_variation"] if baseline["total_variation"] else None
            )
        per_class.append(entry)
    return per_class


def _results(settings, optimisation, seed, per_class, seconds):
    """The fields of ideal.json beside the checkpoint and the network."""
    return {
        "objective": optimisation.objective,
        "tv_weight": settings.tv_weight,
        "l2_weight": optimisation.l2_weight,
        "jitter": optimisation.jitter,
        "range": optimisation.value_range,
        "learning_rate": optimisation.learning_rate,
        "steps": settings.steps,
        "start": settings.start or f"noise 0.5 +- {settings.noise:g}, seed {seed}",
        "target_probability": settings.target_probability,
        "seconds": round(seconds, 2),
        "classes": per_class,
    }


def _save_figure(out_dir, settings, run, classes, images, results):
    """Draws ideal.png: a row of the class images, with --baseline a row of their TV-0 twins; returns its path."""
    names = run.class_names
    arms = [(f"TV weight {settings.tv_weight:g}", 0)] + ([("TV weight 0", len(classes))] if settings.baseline else [])
    rows, titles, labels = [], [], []
    for label, first in arms:
        rows.append([common.display(image) for image in images[first : first + len(classes)]])
        titles.append(
            [
                f"{names[i]}: p={r['probability']:.3f}\nTV {r['total_variation']:.1f}"
                for i, r in zip(classes, results[first:])
            ]
        )
        labels.append(label)
    path = os.path.join(out_dir, "ideal.png")
    common.save_figure(path, rows, titles, labels, cell=common.figure_cell(run.image_shape[0]))
    return path


def _print_table(baseline, per_class):
    print(
        f"{'class':>6}  {'probability':>11}  {'TV':>8}"
        + (f"  {'p (TV 0)':>9}  {'TV (TV 0)':>9}  {'ratio':>6}" if baseline else "")
    )
    for entry in per_class:
        line = f"{entry['class']:>6}  {entry['probability']:>11.4f}  {entry['total_variation']:>8.2f}"
        if baseline:
            base = entry["baseline_tv0"]
            line += f"  {base['probability']:>9.4f}  {base['total_variation']:>9.2f}  {entry['tv_ratio']:>6.3f}"
        print(line)


def run(shared, settings, optimisation):
    """The ideal command: validate, open the model, optimise an image per class, write the results and report them.

    Args:
      shared: the common.Shared flags.
      settings: the Settings.
      optimisation: the Optimisation.

    Raises:
      UserError: for a bad flag, model, class or start image (see the helpers).
    """
    _validate(settings, optimisation)
    model, values = common.open_model(shared.model, shared.network)
    run = model.run
    classes = common.parse_classes(settings.classes, run)
    start_image = common.read_image_or_photo(settings.start, run.image_shape, run.title) if settings.start else None
    out_dir = common.command_out_dir(shared, model, "ideal", RESULT_FILES)
    image_classes, tv_weights, start = _arms(settings, shared.seed, run.image_shape, classes, start_image)
    common.report_network(model)
    _print_plan(settings, optimisation, classes)
    with tf.Graph().as_default():
        v1.set_random_seed(shared.seed)
        graph = build_graph(run, image_classes, tv_weights, start, optimisation)
        with common.restored_session(shared, model, values, initialise=True) as sess:
            images, results, seconds = _optimise_with_summaries(sess, graph, settings, image_classes, out_dir)
    per_class = _per_class(settings, run.class_names, classes, results)
    fields = _results(settings, optimisation, shared.seed, per_class, seconds)
    json_path = common.write_results(out_dir, "ideal.json", model, fields)
    figure_path = _save_figure(out_dir, settings, run, classes, images, results)
    _print_table(settings.baseline, per_class)
    print(f"wrote {paths.shown(figure_path)}, {paths.shown(json_path)} and TensorBoard images in {seconds:.1f} s")
