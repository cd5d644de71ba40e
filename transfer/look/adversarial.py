"""Adversarial examples under an L-infinity budget: FGSM and an iterative projected-gradient attack.

Targeted attacks descend the cross-entropy of the target class, untargeted ones ascend
that of the true class (or, for unlabelled image files, of the network's own first
answer). FGSM takes one step of size epsilon along the gradient's sign; the iterative
attack (PGD) takes many small ones, each projected back into the epsilon ball around the
original and into [0, 1], and leaves an example alone once it succeeds, so that its
perturbation stays as small as the steps allow. Both run in the graph, over batches of
(image, target) pairs; the network's variables are never assigned.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from runtime import cli, paths
from runtime.errors import UserError
from runtime.options import Option
from transfer.look import common

# The command as `python -m transfer.look` lists it; its flags are OPTIONS below.
NAME = "adversarial"
HELP = "FGSM and iterative (PGD) attacks under an L-infinity budget"
DESCRIPTION = (
    "Attack the test set (or image files) with FGSM and an iterative projected-gradient attack "
    "under an L-infinity budget in pixel units, targeted or untargeted; report success rates, perturbation "
    "sizes and top-5."
)

v1 = tf.compat.v1

ATTACKS = ("fgsm", "pgd")
RESULT_FILES = ("adversarial.json",)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The adversarial command's own flags.

    Attributes:
      images: an image file, a folder of them or "skimage:NAME" to attack instead of the test set, or None.
      target: --target as given: a class, "all" or "none".
      epsilon: --epsilon as given: a comma list of budgets in pixel units.
      attacks: --attacks as given: a comma list of fgsm, pgd.
      steps: PGD steps.
      step_size: the PGD step in pixel units, or None for 2.5 * epsilon / steps.
      limit: attack only the first N images, or None for all.
      batch_size: pairs per session run.
      examples: example pairs drawn per attack and epsilon.
    """

    images: str | None
    target: str
    epsilon: str
    attacks: str
    steps: int
    step_size: float | None
    limit: int | None
    batch_size: int
    examples: int


@dataclasses.dataclass(frozen=True)
class Budget:
    """One attack's L-infinity budget and PGD's steps, in input units (pixel units / 255).

    Attributes:
      epsilon: the L-infinity budget.
      steps: PGD steps.
      step_size: the PGD step.
    """

    epsilon: float
    steps: int
    step_size: float


def parse_epsilons(text):
    """Epsilons in pixel units from a comma list such as "8,16,32"; each in (0, 255].

    Raises:
      UserError: for a value that is not a number or lies outside (0, 255].
    """
    values = []
    for item in (part.strip() for part in str(text).split(",")):
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"--epsilon {item!r} is not a number; give pixel units 0..255, e.g. 8 or 8,16,32") from None
        if not 0.0 < value <= common.PIXEL_MAX:
            raise UserError(f"--epsilon {item} is out of range: it must be in (0, 255], in pixel units of the image")
        if value in values:
            raise UserError(f"--epsilon {item} is given twice")
        values.append(value)
    return values


def parse_attacks(text):
    chosen = [part.strip() for part in text.split(",")]
    for name in chosen:
        if name not in ATTACKS:
            raise UserError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)} (comma list)")
    return list(dict.fromkeys(chosen))


def make_pairs(references, target, num_classes):
    """(image index, class) pairs to attack.

    Args:
      references: the class each image has now (its label, or the network's prediction).
      target: None (untargeted: the pair's class is the reference to move away from),
        "all" (every other class), or a class index.
      num_classes: the number of classes.

    Returns:
      (image indices [P], classes [P], number of images skipped because they already are the target).
    """
    references = np.asarray(references, np.int64)
    indices = np.arange(len(references))
    if target is None:
        return indices, references.copy(), 0
    if target == "all":
        classes = np.arange(num_classes)
        image = np.repeat(indices, num_classes - 1)
        wrong = np.concatenate([classes[classes != reference] for reference in references])
        return image, wrong, 0
    keep = references != target
    return indices[keep], np.full(int(keep.sum()), target, np.int64), int((~keep).sum())


def build_graph(run, targeted):
    """Builds FGSM and PGD into the current graph over fed batches.

    Args:
      run: the common.Run whose network it is.
      targeted: whether the attacks aim at the fed classes (True) or away from them.

    Returns:
      A dict of placeholders (images, classes, epsilon, step_size, steps) and tensors
      (probabilities of the fed images, fgsm, pgd: the adversarial images).
    """
    shape = [None, *run.image_shape]
    images = v1.placeholder(tf.float32, shape, name="look/images")
    classes = v1.placeholder(tf.int32, [None], name="look/classes")
    epsilon = v1.placeholder(tf.float32, [], name="look/epsilon")
    step_size = v1.placeholder(tf.float32, [], name="look/step_size")
    steps = v1.placeholder(tf.int32, [], name="look/steps")
    logits = common.build(run, images)["logits"]
    # Targeted: go down the target's cross-entropy; untargeted: up the reference's.
    direction = -1.0 if targeted else 1.0

    def logits_of(x):
        with v1.variable_scope(v1.get_variable_scope(), reuse=True):
            return common.build(run, x)["logits"]

    def gradient_sign(x, x_logits):
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes, logits=x_logits))
        return tf.sign(tf.gradients(loss, x)[0])

    def succeeded(x_logits):
        predicted = tf.argmax(x_logits, axis=1, output_type=tf.int32)
        return tf.equal(predicted, classes) if targeted else tf.not_equal(predicted, classes)

    fgsm = tf.clip_by_value(images + direction * epsilon * gradient_sign(images, logits), 0.0, 1.0)

    def body(step, x):
        x_logits = logits_of(x)
        moved = x + direction * step_size * gradient_sign(x, x_logits)
        moved = tf.clip_by_value(tf.clip_by_value(moved, images - epsilon, images + epsilon), 0.0, 1.0)
        done = tf.reshape(succeeded(x_logits), [-1] + [1] * len(run.image_shape))
        return step + 1, tf.where(done, x, moved)

    _, pgd = tf.while_loop(lambda step, _: step < steps, body, [tf.constant(0), images], back_prop=False)
    return {
        "images": images,
        "classes": classes,
        "epsilon": epsilon,
        "step_size": step_size,
        "steps": steps,
        "probabilities": tf.nn.softmax(logits),
        "fgsm": fgsm,
        "pgd": pgd,
    }


def probabilities_of(sess, graph, images, batch_size):
    return np.concatenate(
        [
            sess.run(graph["probabilities"], {graph["images"]: images[start : start + batch_size]})
            for start in range(0, len(images), batch_size)
        ]
    )


def attack(sess, graph, name, images, classes, budget, batch_size):
    """Runs one attack over all pairs in batches.

    Args:
      sess: a session with the network restored.
      graph: the dict from build_graph.
      name: "fgsm" or "pgd".
      images: float32 [P, ...] in [0, 1], one per pair.
      classes: int [P], the target (targeted) or the reference class (untargeted).
      budget: the Budget, in input units.
      batch_size: pairs per session run.

    Returns:
      float32 adversarial images [P, ...].
    """
    out = []
    for start in range(0, len(images), batch_size):
        feed = {
            graph["images"]: images[start : start + batch_size],
            graph["classes"]: classes[start : start + batch_size],
            graph["epsilon"]: budget.epsilon,
            graph["step_size"]: budget.step_size,
            graph["steps"]: budget.steps,
        }
        out.append(sess.run(graph[name], feed))
    return np.concatenate(out)


def summarise(originals, adversarial, before, after, classes, targeted):
    """Success and perturbation sizes (pixel units 0..255) of one attack at one epsilon.

    A pair the network already answered as the attack wants (the target, or away from the
    label) before any perturbation is no success of the attack: successes and the rate
    count the other pairs, the attacked ones. Sizes are over the successful pairs: the
    perturbations that did the job.
    """
    predicted_after = after.argmax(axis=1)
    predicted_before = before.argmax(axis=1)
    reached = predicted_after == classes if targeted else predicted_after != classes
    already = predicted_before == classes if targeted else predicted_before != classes
    success = reached & ~already
    attacked = int((~already).sum())
    delta = (adversarial - originals).reshape(len(originals), -1).astype(np.float64) * common.PIXEL_MAX
    l2 = np.sqrt((delta**2).sum(axis=1))
    linf = np.abs(delta).max(axis=1)

    def stat(values, kind):
        return round(float(getattr(np, kind)(values[success])), 4) if success.any() else None

    return {
        "pairs": len(classes),
        "attacked": attacked,
        "successes": int(success.sum()),
        "success_rate": round(float(success.sum()) / attacked, 6) if attacked else None,
        "already_before_attack": int(already.sum()),
        "mean_l2": stat(l2, "mean"),
        "max_l2": stat(l2, "max"),
        "mean_linf": stat(linf, "mean"),
        "max_linf": stat(linf, "max"),
    }, success


OPTIONS = (
    Option(
        "--images",
        default=None,
        help="an image file or a folder of them instead of the test set (unlabelled: "
        "untargeted attacks move away from the network's own answer)",
    ),
    Option(
        "--target",
        default="none",
        help="a class name, all (every wrong class for each image) or none (untargeted; default: %(default)s)",
    ),
    Option(
        "--epsilon",
        default="16",
        help="L-infinity budget(s) in pixel units (0, 255], comma list (default: %(default)s)",
    ),
    Option("--attacks", default="fgsm,pgd", help="comma list of fgsm, pgd (default: %(default)s)"),
    Option("--steps", type=cli.positive_int, default=20, help="PGD steps (default: %(default)s)"),
    Option("--step-size", type=float, default=None, help="PGD step in pixel units (default: 2.5 * epsilon / steps)"),
    Option("--batch-size", type=cli.positive_int, default=500, help="pairs per session run (default: %(default)s)"),
    Option(
        "--examples",
        type=cli.non_negative_int,
        default=6,
        help="example pairs drawn per attack and epsilon (default: %(default)s)",
    ),
)
# What run takes, each made once from the parsed flags (runtime.options.Flags.record).
RECORDS = (common.Shared, Settings, common.DataRequest)


def _parse_target(text, run):
    if text.strip().lower() in ("none", "untargeted"):
        return None
    if text.strip().lower() == "all":
        return "all"
    if "," in text:
        raise UserError(f"--target takes one class, all or none, got {text!r}")
    return common.parse_classes(text, run)[0]


def _validate(settings):
    """The epsilons and attacks the flags ask for, checked before anything is opened.

    Returns:
      (epsilons in pixel units, attack names).

    Raises:
      UserError: for a bad --epsilon, --attacks or --step-size.
    """
    epsilons = parse_epsilons(settings.epsilon)
    attacks = parse_attacks(settings.attacks)
    if settings.step_size is not None and not 0.0 < settings.step_size <= common.PIXEL_MAX:
        raise UserError(f"--step-size must be in (0, 255] pixel units, got {settings.step_size}")
    return epsilons, attacks


def _given_images(given, run):
    """The --images files as (images, labels None, file names); None when the run's test set is attacked.

    Raises:
      UserError: when there are no --images and the run has no test set (an ImageNet checkpoint).
      DataError: for a bad image (see common.read_images).
    """
    if not given and run.data_source is None:
        raise UserError(
            f"the {run.title} has no test set here: pass --images FILE, a folder of images, "
            f"or {common.SKIMAGE_PREFIX}NAME ({', '.join(common.SKIMAGE_IMAGES)})"
        )
    if not given:
        return None
    images, files = common.read_images(given, run.image_shape, run.title)
    return images, None, files


def _test_images(request, run, limit):
    """The run's test set, its first --limit images: ((images in [0, 1], labels, file names None), its description)."""
    data = common.load_data(request, run)
    test = data.test.subset(np.arange(min(limit or len(data.test), len(data.test))))
    return (data.images(test), test.labels, None), data.description


def _limit(limit, inputs):
    """(images, labels, files) cut to the first --limit images."""
    images, labels, files = inputs
    if limit:
        images, labels = images[:limit], None if labels is None else labels[:limit]
        files = None if files is None else files[:limit]
    return images, labels, files


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The (image, class) pairs one run attacks, and what the report and the figures say of them.

    Attributes:
      index: the image index of each pair [P].
      classes: each pair's target (targeted) or reference class (untargeted) [P].
      originals: each pair's image, float32 [P, ...] in [0, 1].
      before: the network's probabilities for those images [P, classes].
      shown: the pairs drawn as examples.
      skipped: images left out because they already are the target class.
      target: None (untargeted), "all" or a class index.
      names: the network's class names.
      labels: each image's label [N], or None for unlabelled image files.
      files: each image's file name [N], or None for the test set.
      image_count: N, the images attacked.
      clean_accuracy: the network's accuracy on the images as they are, or None without labels.
    """

    index: np.ndarray
    classes: np.ndarray
    originals: np.ndarray
    before: np.ndarray
    shown: object
    skipped: int
    target: object
    names: tuple
    labels: object
    files: object
    image_count: int
    clean_accuracy: object

    @property
    def targeted(self):
        return self.target is not None


def _plan(settings, sess, graph, inputs, target, names):
    """The pairs to attack, from the labels or else the network's own answers on the clean images.

    Raises:
      UserError: when every image already is the target class.
    """
    images, labels, files = inputs
    clean = probabilities_of(sess, graph, images, settings.batch_size)
    references = labels if labels is not None else clean.argmax(axis=1)
    index, classes, skipped = make_pairs(references, target, len(names))
    if not len(classes):
        raise UserError(f"nothing to attack: every image already is class {names[target]}")
    shown = (
        np.unique(np.linspace(0, len(classes) - 1, min(settings.examples, len(classes))).round().astype(int))
        if settings.examples
        else []
    )
    return _Plan(
        index=index,
        classes=classes,
        originals=images[index],
        before=clean[index],
        shown=shown,
        skipped=skipped,
        target=target,
        names=names,
        labels=labels,
        files=files,
        image_count=len(images),
        clean_accuracy=None if labels is None else float(np.mean(clean.argmax(axis=1) == labels)),
    )


def _print_plan(plan):
    if plan.target is None:
        what = "untargeted"
    else:
        what = "every wrong target" if plan.target == "all" else f"target {plan.names[plan.target]}"
    print(
        f"attacking {len(plan.index)} pairs ({plan.image_count} images, {what}); clean accuracy "
        + ("n/a (unlabelled images)" if plan.clean_accuracy is None else f"{plan.clean_accuracy:.4f}")
        + (f"; {plan.skipped} image(s) already of the target class skipped" if plan.skipped else "")
    )


def _budget(settings, epsilon):
    """The Budget of one epsilon in pixel units: --step-size, else 2.5 * epsilon / --steps."""
    step_size = settings.step_size if settings.step_size is not None else 2.5 * epsilon / settings.steps
    return Budget(epsilon / common.PIXEL_MAX, settings.steps, step_size / common.PIXEL_MAX)


def _attack_at(sess, graph, settings, plan, name, epsilon, out_dir):
    """Runs one attack at one epsilon over the plan's pairs; draws its figure and prints its row.

    Returns:
      The attack's summary (see summarise), with its settings, time and examples.
    """
    budget = _budget(settings, epsilon)
    started = time.monotonic()
    adversarial = attack(sess, graph, name, plan.originals, plan.classes, budget, settings.batch_size)
    after = probabilities_of(sess, graph, adversarial, settings.batch_size)
    summary, success = summarise(plan.originals, adversarial, plan.before, after, plan.classes, plan.targeted)
    summary.update(attack=name, epsilon=epsilon, seconds=round(time.monotonic() - started, 2))
    if name == "pgd":
        summary.update(steps=budget.steps, step_size=round(budget.step_size * common.PIXEL_MAX, 4))
    summary["examples"] = _examples(plan, success, after)
    if len(plan.shown):
        _figure(os.path.join(out_dir, f"adversarial_{name}_eps{epsilon:g}.png"), plan, adversarial, after, epsilon)
    print(_row(summary))
    return summary


def _examples(plan, success, after):
    """The shown pairs as the results list them: image, label, class, success and top-5 before and after."""
    names, files, labels = plan.names, plan.files, plan.labels
    return [
        {
            "image": files[plan.index[p]] if files else int(plan.index[p]),
            "label": None if labels is None else names[labels[plan.index[p]]],
            ("target" if plan.targeted else "moved_from"): names[plan.classes[p]],
            "success": bool(success[p]),
            "top5_before": common.top_k(plan.before[p], names),
            "top5_after": common.top_k(after[p], names),
        }
        for p in plan.shown
    ]


def _results(given, plan, seconds, results, described):
    """The fields of adversarial.json beside the checkpoint, the network and its classes."""
    if plan.target is None:
        target = "none"
    else:
        target = "all" if plan.target == "all" else plan.names[plan.target]
    return {
        "inputs": given or "test set",
        **({"data": described} if described is not None else {}),
        "images": plan.image_count,
        "target": target,
        "skipped_already_target": plan.skipped,
        "clean_accuracy": plan.clean_accuracy,
        "units": "epsilon, L2 and L-infinity in pixel units 0..255; sizes over the successful pairs; success "
        "rates over the attacked pairs (those not already answered as the attack wants)",
        "seconds": round(seconds, 2),
        "results": results,
    }


def _print_examples(given, results):
    # A few files given: every attack's examples; the test set: the first attack's.
    for entry in results if given else results[:1]:
        for example in entry["examples"][:3]:
            print(
                f"  example {example['image']}: before {example['top5_before']}, after {entry['attack']} eps "
                f"{entry['epsilon']:g}: {example['top5_after']}"
            )


def run(shared, settings, request):
    """The adversarial command: validate, open the model, read the images, attack, write and report.

    Args:
      shared: the common.Shared flags.
      settings: the Settings.
      request: the common.DataRequest, the test set's data when it is not the run's own.

    Raises:
      UserError: for a bad flag, model, image or data set (see the helpers).
    """
    epsilons, attacks = _validate(settings)
    model, values = common.open_model(shared.model, shared.network)
    run = model.run
    target = _parse_target(settings.target, run)
    given = _given_images(settings.images, run)
    inputs, described = (given, None) if given is not None else _test_images(request, run, settings.limit)
    out_dir = common.command_out_dir(shared, model, "adversarial", RESULT_FILES, request.data_dir)
    inputs = _limit(settings.limit, inputs)
    common.report_network(model)
    with tf.Graph().as_default():
        graph = build_graph(run, targeted=target is not None)
        with common.restored_session(shared, model, values) as sess:
            plan = _plan(settings, sess, graph, inputs, target, run.class_names)
            _print_plan(plan)
            began = time.monotonic()
            results = [
                _attack_at(sess, graph, settings, plan, name, epsilon, out_dir)
                for name in attacks
                for epsilon in epsilons
            ]
            seconds = time.monotonic() - began
    fields = _results(settings.images, plan, seconds, results, described)
    path = common.write_results(out_dir, "adversarial.json", model, fields)
    _print_examples(settings.images, results)
    print(f"wrote {paths.shown(path)} and the example figures in {seconds:.1f} s")


def _row(summary):
    def size(key):
        return "-" if summary[key] is None else f"{summary[key]:.1f}"

    rate = "  -  " if summary["success_rate"] is None else f"{100 * summary['success_rate']:5.1f}%"

    return (
        f"{summary['attack']:>4}  eps {summary['epsilon']:>5g}/255  success "
        f"{summary['successes']:>5}/{summary['attacked']:<5} "
        f"({rate})  L2 mean {size('mean_l2')} max {size('max_l2')}  "
        f"Linf mean {size('mean_linf')} max {size('max_linf')}  ({summary['seconds']:.1f} s)"
    )


def _figure(path, plan, adversarial, after, epsilon):
    """Rows of original | perturbation (amplified to the full grey range at +-epsilon) | result, per shown pair."""
    names, originals, before, classes = plan.names, plan.originals, plan.before, plan.classes
    labels = None if plan.labels is None else plan.labels[plan.index]
    rows, titles, ranges = [], [], []
    bound = epsilon / common.PIXEL_MAX
    for p in plan.shown:
        first, second = int(before[p].argmax()), int(after[p].argmax())
        rows.append([common.display(image) for image in (originals[p], adversarial[p] - originals[p], adversarial[p])])
        aim = f"target {names[classes[p]]}" if plan.targeted else f"away from {names[classes[p]]}"
        label = "" if labels is None else f"label {names[labels[p]]}, "
        titles.append(
            [
                f"{label}{names[first]} p={before[p][first]:.2f}",
                f"x{1 / (2 * bound):.0f}, {aim}",
                f"{names[second]} p={after[p][second]:.2f}",
            ]
        )
        ranges.append([(0.0, 1.0), (-bound, bound), (0.0, 1.0)])
    common.save_figure(path, rows, titles, value_ranges=ranges, cell=common.figure_cell(originals.shape[1]))
