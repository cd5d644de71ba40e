"""Train the digit classifier on top of conv layers restored from the autoencoder.

Restores the chosen scopes from a checkpoint through a partial Saver, freezes them by
leaving them out of the optimizer's var_list, prints the restore plan, trains, and
proves at the end that every frozen variable still equals the checkpoint bit for bit.

    python train_transfer.py --restore conv
    python train_transfer.py --restore none          # the from-scratch baseline
    python train_transfer.py --restore conv --dry-run
"""

import os

from runtime.quiet import exit_now, guard_startup, import_tensorflow

if __name__ == "__main__":
    guard_startup()  # from here on Ctrl-C or SIGTERM ends the process with one line, even during the imports
import_tensorflow(log=print)  # before anything imports it: keeps TensorFlow's start-up lines off the terminal

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data import pipeline, sources  # noqa: E402
from data.augment import random_shift  # noqa: E402
from data.splits import split_train  # noqa: E402
from models.cae import ENCODER_SCOPES, ENCODER_UNITS  # noqa: E402
from models.classifier import build_classifier, head  # noqa: E402
from runtime import cli, onednn, rundir  # noqa: E402
from runtime.checkpoints import Checkpointer  # noqa: E402
from runtime.errors import UserError, disk_full_reason, one_line  # noqa: E402
from runtime.paths import DirAlias, shown  # noqa: E402
from runtime.session import session_config, set_process_threads  # noqa: E402
from runtime.summaries import SummaryWriter, confusion_image, scalars  # noqa: E402
from runtime.training import finite_or_none, train_loop  # noqa: E402
from transfer import checkpoint as ckpt  # noqa: E402
from transfer.features import FeatureBatchInput, compute_features  # noqa: E402
from transfer.flags import add_transfer_flags, parse_transfer_flags  # noqa: E402
from transfer.plan import make_plan  # noqa: E402
from transfer.selection import in_any_scope  # noqa: E402

v1 = tf.compat.v1
tf.get_logger().setLevel("ERROR")  # TF's Python deprecation notices are not the user's concern

NUM_CLASSES = 10
EVAL_BATCH = 1000
# A resumed run must have been started with the same values of these.
RESUME_KEYS = (
    "checkpoint",
    "restore",
    "restore_exclude",
    "map",
    "skip_mismatched",
    "fine_tune",
    "lr_mult",
    "dataset",
    "data_source",
    "data_identity",
    "labels_per_class",
    "validation_size",
    "batch_size",
    "seed",
    "dropout",
    "shift",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train the classifier (conv1, conv2, fc1, logits) "
        "with layers restored from the autoencoder's checkpoint.",
    )
    group = parser.add_argument_group("transfer")
    group.add_argument(
        "--checkpoint",
        default=os.path.join("checkpoints", "autoencoder"),
        help="the transfer source: a model dir (its newest checkpoint) or a checkpoint prefix (default: %(default)s)",
    )
    add_transfer_flags(group)
    group.add_argument("--dry-run", action="store_true", help="print the restore plan and exit without training")
    group.add_argument(
        "--cache-features",
        choices=("auto", "on", "off"),
        default="auto",
        help="train the head on conv features computed once; "
        "auto: whenever conv1 and conv2 are frozen (default: %(default)s)",
    )

    group = parser.add_argument_group("training")
    group.add_argument(
        "--labels-per-class",
        type=cli.positive_int,
        default=None,
        help="labelled training examples per class, a balanced seeded subset (default: all)",
    )
    group.add_argument(
        "--validation-size",
        type=cli.non_negative_int,
        default=500,
        help="training examples held out to pick the best epoch; "
        "the test set is never used for that (default: %(default)s)",
    )
    group.add_argument(
        "--epochs", type=cli.positive_int, default=30, help="passes over the labelled examples (default: %(default)s)"
    )
    group.add_argument(
        "--batch-size", type=cli.positive_int, default=64, help="examples per step (default: %(default)s)"
    )
    group.add_argument(
        "--learning-rate", type=cli.learning_rate, default=1e-3, help="Adam learning rate (default: %(default)s)"
    )
    group.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="dropout rate on fc1 while training, in [0, 1) (default: %(default)s)",
    )
    group.add_argument(
        "--shift",
        type=cli.non_negative_int,
        default=0,
        help="shift each training image by up to this many pixels at random; "
        "turns the feature cache off (default: %(default)s)",
    )
    cli.add_data_flags(parser)
    cli.add_runtime_flags(parser, os.path.join("checkpoints", "transfer"))
    return parser.parse_args(argv)


def accuracy_and_loss(sess, images_ph, logits, images, labels, extra_feed):
    """Accuracy, mean softmax cross-entropy and predictions over float images, in batches."""
    outputs = [
        sess.run(logits, {images_ph: images[start : start + EVAL_BATCH], **extra_feed})
        for start in range(0, len(images), EVAL_BATCH)
    ]
    outputs = np.concatenate(outputs).astype(np.float64)
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predictions = outputs.argmax(axis=1)
    return (
        float(np.mean(predictions == labels)),
        float(-np.mean(log_probs[np.arange(len(labels)), labels])),
        predictions,
    )


def cache_decision(plan, args):
    """Whether the head can train on conv features computed once, and why (or why not)."""
    if any(row.trainable for row in plan.rows if in_any_scope(row.name, ENCODER_SCOPES)):
        reason = "conv1 and conv2 train in this plan"
    elif args.shift:
        reason = "--shift moves the input every step"
    elif args.cache_features == "off":
        return False, "--cache-features off"
    else:
        return True, "conv1 and conv2 are frozen and the input is not augmented"
    if args.cache_features == "on":
        raise UserError(f"--cache-features on is impossible here: {reason}")
    return False, reason


def build_train_op(loss, plan, variables, learning_rate, global_step):
    """One Adam per learning-rate multiplier over exactly the plan's trainable variables.

    Adam is invariant to the scale of gradients, so a smaller rate for a scope needs an
    optimizer of its own, not scaled gradients. The default group keeps the name Adam,
    so its slots are `<var>/Adam` and `<var>/Adam_1` as in classic TF1 checkpoints.
    """
    by_name = {var.op.name: var for var in variables}
    groups = [
        (mult, [by_name[name] for name in names]) for mult, names in sorted(plan.lr_groups().items(), reverse=True)
    ]
    trainable = [var for _, group in groups for var in group]
    gradients = tf.gradients(loss, trainable)
    updates, offset = [], 0
    for mult, group in groups:
        name = "Adam" if mult == 1.0 else f"Adam_x{mult:g}"
        optimizer = v1.train.AdamOptimizer(learning_rate * mult, name=name)
        updates.append(optimizer.apply_gradients(list(zip(gradients[offset : offset + len(group)], group))))
        offset += len(group)
    with tf.control_dependencies(updates):
        return v1.assign_add(global_step, 1, name="train_op"), trainable


def run(args):
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    restore, exclude, maps, lr_mults = parse_transfer_flags(args)
    source_prefix, source_variables = None, []
    if restore != ():
        source_prefix = ckpt.resolve_checkpoint(args.checkpoint)
        ckpt.refuse_writing_into(source_prefix, args.model_dir)
        source_variables = ckpt.read_variables(source_prefix)

    set_process_threads(args.intra_op_threads, args.inter_op_threads)
    with tf.Graph().as_default():
        v1.set_random_seed(args.seed)
        image_batch = pipeline.BatchInput(args.batch_size)
        feature_batch = FeatureBatchInput(args.batch_size, ENCODER_UNITS)
        shifted = random_shift(image_batch.images, args.shift, seed=args.seed)
        images = v1.placeholder_with_default(shifted, [None, 28, 28, 1], name="images")
        is_training = v1.placeholder_with_default(True, [], name="is_training")
        end_points = build_classifier(images, NUM_CLASSES, args.dropout, is_training)
        model_variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        plan = make_plan(
            ckpt.graph_variables(model_variables),
            source_variables,
            restore,
            source_prefix,
            exclude=exclude,
            maps=maps,
            skip_mismatched=args.skip_mismatched,
            fine_tune=args.fine_tune,
            lr_mults=lr_mults,
        )
        print(plan.format())
        if restore != () and not plan.restored:
            print(
                f"warning: this plan restores nothing from {shown(source_prefix)}: the run trains from scratch; "
                "pass --restore none to say so"
            )
        if args.dry_run:
            return

        use_cache, why = cache_decision(plan, args)
        print(f"feature cache: {'on' if use_cache else 'off'} ({why})")
        with v1.variable_scope(v1.get_variable_scope(), reuse=True):
            cached_head = head(feature_batch.features, NUM_CLASSES, args.dropout, is_training)
        logits, labels = (
            (cached_head["logits"], feature_batch.labels) if use_cache else (end_points["logits"], image_batch.labels)
        )
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        batch_accuracy = tf.reduce_mean(
            tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels), tf.float32)
        )
        global_step = v1.train.get_or_create_global_step()
        train_op, trainable = build_train_op(loss, plan, model_variables, args.learning_rate, global_step)
        print(
            f"training {len(trainable)} variables ({sum(int(np.prod(v.shape)) for v in trainable):,} weights); "
            f"{'head on cached conv features' if use_cache else 'full forward pass every step'}"
        )

        model_dir = args.model_dir
        dataset = sources.load_requested(args.dataset, args.data_dir, args.sample)
        train_index, val_index = split_train(
            dataset.train_labels, args.validation_size, args.labels_per_class, args.seed
        )
        train_images, train_labels = (
            dataset.train_images[train_index],
            dataset.train_labels[train_index].astype(np.int64),
        )
        val_images = pipeline.to_float_images(dataset.train_images[val_index])
        val_labels = dataset.train_labels[val_index].astype(np.int64)
        test_images, test_labels = pipeline.to_float_images(dataset.test_images), dataset.test_labels.astype(np.int64)
        steps_per_epoch = cli.steps_per_epoch(len(train_index), args.batch_size, "labelled training examples")
        total_steps = args.epochs * steps_per_epoch
        config = dict(
            vars(args),
            model="transfer",
            checkpoint=source_prefix,
            data_source=dataset.source_kind,
            data_identity=dataset.identity(),
            onednn=onednn.state(),
            data=dataset.describe(),
            num_train=len(train_index),
            num_validation=len(val_index),
            total_steps=total_steps,
            cache_features_used=use_cache,
        )
        resuming = rundir.check_resume(model_dir, config, RESUME_KEYS) is not None
        print(f"labelled training examples: {len(train_index)}; validation: {len(val_index)}; test: {len(test_labels)}")

        train_summary = v1.summary.merge(
            [v1.summary.scalar("losses/train", loss), v1.summary.scalar("accuracy/train_batch", batch_accuracy)]
        )
        histogram_summary = v1.summary.merge(
            [v1.summary.histogram(f"weights/{var.op.name}", var) for var in model_variables]
        )
        plan_summary = v1.summary.text("restore_plan", tf.constant(plan_markdown(plan)))
        best_path = os.path.join(model_dir, "best")
        restore_saver = ckpt.restore_saver(plan, model_variables)
        checkpointer = Checkpointer(model_dir, max_to_keep=args.keep_checkpoints)
        best_saver = v1.train.Saver(model_variables, max_to_keep=1, save_relative_paths=True, name="best_saver")
        init = v1.global_variables_initializer()
        eval_feed = {is_training: False}

        with v1.Session(
            config=session_config(
                args.gpu_memory_fraction, args.allow_growth, args.intra_op_threads, args.inter_op_threads
            )
        ) as sess:
            resumed = checkpointer.restore_latest(sess)
            source_values = (
                ckpt.read_values(source_prefix, [row.source for row in plan.restored]) if plan.restored else {}
            )
            if resumed:
                print(f"resumed from {resumed}: its weights win; the transfer source is not restored again")
            else:
                sess.run(init)
                if restore_saver is not None:
                    ckpt.restore(sess, restore_saver, source_prefix)
                    count, worst = ckpt.max_abs_diff(sess, plan.restored, model_variables, source_values)
                    if worst != 0.0:
                        raise UserError(
                            f"restore check failed: restored values differ from {source_prefix} by up to {worst:g}"
                        )
                    print(f"restored {count} variables from {source_prefix}; each equals the checkpoint exactly")
            start_step = int(sess.run(global_step))
            total_steps = cli.check_steps(start_step, total_steps)
            if not resuming:  # a resumed run's config.json is rewritten only once it has trained
                rundir.write_config(model_dir, config)
            rundir.write_json(os.path.join(model_dir, "restore_plan.json"), plan.to_json())
            writer = SummaryWriter(model_dir, graph=sess.graph if start_step == 0 else None)
            if start_step == 0:
                writer.add_summary(sess.run(plan_summary), 0)

            stream = pipeline.index_stream(len(train_index), args.batch_size, args.seed, start_step, total_steps)
            if use_cache:
                began = time.monotonic()
                features = compute_features(
                    sess, images, end_points["features"], pipeline.to_float_images(train_images)
                )
                print(f"cached conv features of {len(features)} images in {time.monotonic() - began:.1f} s")
                feature_batch.initialize(sess, features, train_labels, stream)
            else:
                image_batch.initialize(sess, train_images, train_labels, stream)

            if not resumed:  # a best epoch left by a run that never saved a checkpoint is not this run's
                shutil.rmtree(best_path, ignore_errors=True)
            best = rundir.read_json(os.path.join(best_path, "best.json")) or {
                "epoch": 0,
                "val_accuracy": -1.0,
                "step": 0,
            }
            best_alias = None

            # Tiny labelled sets make epochs of one step: keep the histograms to about 100 per run.
            histogram_every = max(1, args.epochs // 100)

            def save_best():
                nonlocal best_alias
                os.makedirs(best_path, exist_ok=True)
                best_alias = best_alias or DirAlias(best_path)
                try:
                    best_saver.save(sess, best_alias.join("model.ckpt"))
                except (tf.errors.OpError, OSError, RuntimeError) as error:
                    raise UserError(
                        f"cannot save the best epoch in {shown(best_path)}: "
                        f"{disk_full_reason(error) or one_line(error)}"
                    ) from None
                rundir.write_json(os.path.join(best_path, "best.json"), best)

            def on_epoch_end(epoch, step):
                summary = {}
                if len(val_labels):
                    val_accuracy, val_loss, _ = accuracy_and_loss(
                        sess, images, end_points["logits"], val_images, val_labels, eval_feed
                    )
                    summary = {"accuracy/val": val_accuracy, "losses/val": val_loss}
                    if val_accuracy > best["val_accuracy"]:
                        best.update(epoch=epoch, step=step, val_accuracy=val_accuracy)
                        save_best()
                    print(
                        f"epoch {epoch}: val accuracy {val_accuracy:.4f}, val loss {val_loss:.4f} "
                        f"(best: epoch {best['epoch']}, {best['val_accuracy']:.4f})"
                    )
                writer.add_summary(scalars(summary), step)
                if epoch % histogram_every == 0 or step == total_steps:
                    writer.add_summary(sess.run(histogram_summary), step)
                writer.flush()

            began = time.monotonic()
            result = train_loop(
                sess,
                train_op,
                loss,
                start_step,
                total_steps,
                steps_per_epoch,
                args.batch_size,
                checkpointer,
                save_every=args.save_every,
                writer=writer,
                summary_op=train_summary,
                summary_every=args.summary_every,
                on_epoch_end=on_epoch_end,
            )
            count, worst = ckpt.max_abs_diff(sess, plan.frozen_restored, model_variables, source_values)
            if count:
                print(f"frozen check: {count} variables, max |diff| = {worst:g}")
                if worst != 0.0:
                    raise UserError(f"frozen check failed: a frozen variable moved by up to {worst:g}")
            if best["val_accuracy"] >= 0:
                with DirAlias(best_path) as alias:
                    best_saver.restore(sess, alias.join("model.ckpt"))
                print(f"evaluating the best epoch by validation accuracy: epoch {best['epoch']}")
            test_accuracy, test_loss, predictions = accuracy_and_loss(
                sess, images, end_points["logits"], test_images, test_labels, eval_feed
            )
            val_accuracy = best["val_accuracy"] if best["val_accuracy"] >= 0 else None
            writer.add_summary(scalars({"accuracy/test": test_accuracy, "losses/test": test_loss}), result.final_step)
            writer.add_summary(
                confusion_image("confusion_matrix/test", test_labels, predictions, NUM_CLASSES), result.final_step
            )
            writer.close()

    metrics = {
        "restore": args.restore,
        "checkpoint": source_prefix,
        "dataset": dataset.name,
        "data_source": dataset.source_kind,
        "labels_per_class": args.labels_per_class,
        "num_train": len(train_index),
        "num_validation": len(val_index),
        "num_test": len(test_labels),
        "val_accuracy": val_accuracy,
        "best_epoch": best["epoch"] or None,
        "test_accuracy": test_accuracy,
        "test_loss": finite_or_none(test_loss),
        "frozen_check_variables": count,
        "frozen_check_max_abs_diff": worst if count else None,
        "global_step": result.final_step,
        "cache_features": use_cache,
        "train_images_per_sec": round(result.images_per_sec, 1),
        "wall_seconds": round(time.monotonic() - began, 1),
    }
    if resuming:
        rundir.write_config(model_dir, config)
    rundir.write_json(os.path.join(model_dir, "metrics.json"), metrics)
    print(f"test accuracy: {test_accuracy:.4f} ({len(test_labels)} images)")
    print(f"metrics: {os.path.join(model_dir, 'metrics.json')}")


def plan_markdown(plan):
    """The plan as a Markdown table, for TensorBoard's text dashboard."""
    lines = [
        f"checkpoint: `{shown(plan.checkpoint) if plan.checkpoint else 'none'}`",
        "",
        "| variable | shape | source | action | trainable | lr x |",
        "|---|---|---|---|---|---|",
    ]
    for row in plan.rows:
        action = row.action + (f" ({row.reason})" if row.reason else "")
        lines.append(
            f"| {row.name} | {list(row.shape)} | {row.source or 'fresh'} | {action} "
            f"| {'yes' if row.trainable else 'frozen'} | {row.lr_mult:g} |"
        )
    return "\n".join(lines)


def main(argv=None):
    return cli.main(run, parse_args, argv, kind="transfer")


if __name__ == "__main__":
    code = main()
    if code:
        exit_now(code)  # an error or a signal: TensorFlow's threads may still run (runtime.quiet.exit_now)
