"""The transfer classifier's graph, built by one function for the script, the benchmark and tests.

A transfer classifier is a registry network (models.networks) without its head, and a
new head of the user's classes over the network's features. The graph takes float images
in [0, 1] as the data gives them (28x28 grey for IDX, the network's own size for an image
folder, decoded to it) and brings them to the network's input inside: channels and size
first (data.image_folder's rules), then the network's own preprocessing.

Two training paths share the head's variables: the full forward pass, and the head alone
over features cached once (when nothing below the head trains and the input is not
augmented; see :func:`cache_decision`). Which layers are in training mode comes from the
plan (transfer.plan): the head's dropout, and the BatchNorm layers whose statistics the
plan marks as updated. Everything else, the frozen backbone above all, runs in inference
mode: its BatchNorm uses the checkpoint's moving statistics and creates no update op.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from data import image_folder, pipeline
from data.augment import random_shift
from models import networks
from runtime.training import GraphValues
from transfer import channels, writes
from transfer import source as ckpt
from transfer.features import FeatureBatchInput
from transfer.plan import MOVING_STATISTICS

v1 = tf.compat.v1


def input_spec(network, image_size=None, channels=None):
    """The InputSpec the network is fed: its own size, or image_size x image_size; its own channels, or `channels`."""
    height, width = (image_size, image_size) if image_size else network.image_size
    return image_folder.InputSpec(height, width, channels or network.channels)


def to_network_input(network, images, spec):
    """Float images [N, h, w, c] in [0, 1] to the network's input at `spec`."""
    if tuple(images.shape[1:]) != (spec.height, spec.width, spec.channels):
        images = image_folder.fit_and_pad(image_folder.to_channels(images, spec.channels), spec.height, spec.width)
    if network.preprocess is networks.unit_preprocess:
        return images  # already what the digit classifier takes
    return preprocess_channels(network, images * 255.0)


def preprocess_channels(network, images):
    """The network's preprocessing of images [..., C] in [0, 255] of any C.

    RGB is the network's own, and so is any C when the network's preprocessing treats every
    channel alike (`Network.preprocess_alike`: EfficientNet-Lite, MobileNet): a grey image is
    preprocessed as one channel, not copied into three first. Otherwise channel i gets what
    the network does to RGB channel min(i, 2): a grey image (C = 1) what the red channel
    gets, the first 3 of C > 3 (RGB plus alpha, near-infrared or depth) RGB's, every extra
    one the blue channel's.
    """
    count = images.shape[-1]
    if count == network.channels or network.preprocess_alike:
        return network.preprocess(images)
    rank = len(images.shape)
    planes = []
    for i in range(count):
        one = images[..., i : i + 1]
        planes.append(network.preprocess(tf.tile(one, [1] * (rank - 1) + [3]))[..., min(i, 2) : min(i, 2) + 1])
    return tf.concat(planes, axis=-1)


def _logits(network, images, num_classes, dropout, is_training, training_scopes):
    def layer_mode(scope):
        return is_training if scope in training_scopes else False

    features, end_points = network.build(images, num_classes=None, is_training=layer_mode)
    logits = network.head(features, num_classes, is_training=is_training, dropout_keep_prob=1.0 - dropout)
    return features, logits, end_points


def inference_logits(network, images, spec, num_classes):
    """Logits of float images [N, h, w, c] in [0, 1], every layer in inference mode (export, predict)."""
    return _logits(network, to_network_input(network, images, spec), num_classes, 0.0, False, set())[1]


def variables_of(network, num_classes, data_spec, spec):
    """VariableInfo of the classifier's model variables, from a graph built and thrown away.

    The plan needs them before the real graph exists: which BatchNorm layers train is
    the plan's decision, and the builder takes it as it builds.
    """
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, data_spec.height, data_spec.width, data_spec.channels])
        _logits(network, to_network_input(network, images, spec), num_classes, 0.0, False, set())
        return ckpt.graph_variables(ckpt.model_variables_of(v1.get_default_graph()))


def cache_decision(plan, network, shift, cache_flag):
    """Whether the head can train on features computed once, and why (or why not).

    Returns:
      (bool, reason).

    Raises:
      UserError: for --cache-features on when it cannot be.
    """
    from runtime.errors import UserError

    below_head = [row for row in plan.rows if not network.is_head_variable(row.name)]
    if any(row.trainable or row.updated for row in below_head):
        reason = "layers below the head train in this plan"
    elif shift:
        reason = "--shift moves the input every step"
    elif cache_flag == "off":
        return False, "--cache-features off"
    else:
        return True, "everything below the head is frozen and the input is not augmented"
    if cache_flag == "on":
        raise UserError(f"--cache-features on is impossible here: {reason}")
    return False, reason


def trainable_in_groups(plan, variables):
    """The plan's trainable variables, grouped by learning-rate multiplier (largest first).

    Returns:
      [(multiplier, [variables])], the order every optimizer of the run applies them in.
    """
    by_name = {var.op.name: var for var in variables}
    return [(mult, [by_name[name] for name in names]) for mult, names in sorted(plan.lr_groups().items(), reverse=True)]


class LearningRateGroups(v1.train.Optimizer):
    """One Adam per learning-rate multiplier, behind the one optimizer interface.

    Adam is invariant to the scale of gradients, so a smaller rate for a scope needs an
    optimizer of its own, not scaled gradients. The default group keeps the name Adam,
    so its slots are `<var>/Adam` and `<var>/Adam_1` as in classic TF1 checkpoints.
    Being a `tf.compat.v1.train.Optimizer`, it can be handed to runtime.cluster.train_op
    and wrapped by SyncReplicasOptimizer like a single Adam.
    """

    def __init__(self, plan, variables, learning_rate, extra_updates=()):
        """Makes the group optimizers (no ops yet: they are made by apply_gradients).

        Args:
          plan: the RestorePlan, whose lr_groups say which variable trains at which rate.
          variables: the graph's model variables.
          learning_rate: the base rate (a float).
          extra_updates: ops to run with every update (BatchNorm's moving averages).
        """
        super().__init__(use_locking=False, name="LearningRateGroups")
        self.plan = plan
        self.groups = trainable_in_groups(plan, variables)
        self.var_list = [var for _, group in self.groups for var in group]
        self._extra_updates = list(extra_updates)
        self._optimizers = [
            v1.train.AdamOptimizer(
                learning_rate * mult,
                name="Adam" if mult == 1.0 else f"Adam_x{mult:g}",
            )
            for mult, _ in self.groups
        ]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        """Applies each group's gradients with its own Adam; increments global_step once after all.

        Args:
          grads_and_vars: (gradient, variable) pairs over exactly `var_list`, in any order.
          global_step: incremented by one once every update ran, or None.
          name: the name of the returned op.

        Returns:
          The assign_add of global_step (named `name`, by default "train_op"), or a group of the updates.
        """
        by_name = channels.masked_gradients(self.plan, {var.op.name: grad for grad, var in grads_and_vars})
        updates = list(self._extra_updates)
        for optimizer, (_, group) in zip(self._optimizers, self.groups):
            updates.append(optimizer.apply_gradients([(by_name[var.op.name], var) for var in group]))
        with tf.control_dependencies(updates):
            if global_step is None:
                return tf.group(*updates, name=name or "apply")
            return v1.assign_add(global_step, 1, name=name or "train_op")


def build_train_op(loss, plan, variables, learning_rate, global_step, extra_updates=()):
    """One Adam per learning-rate multiplier over exactly the plan's trainable variables.

    `extra_updates` (BatchNorm's moving-average updates) run with every step.

    Returns:
      (train op that increments global_step, the trained variables).
    """
    optimizer = LearningRateGroups(plan, variables, learning_rate, extra_updates=extra_updates)
    trainable = optimizer.var_list
    gradients = tf.gradients(loss, trainable)
    return optimizer.apply_gradients(list(zip(gradients, trainable)), global_step), trainable


@dataclasses.dataclass(frozen=True)
class TransferGraph:
    """Handles of a built transfer graph.

    Attributes:
      images: float32 [None, h, w, c] in [0, 1] as the data gives them; defaults to the
        next training batch, feed it to evaluate.
      is_training: bool scalar, default True; feed False to evaluate.
      features: the network's features [None, units] (what a feature cache stores).
      logits: the full forward pass's logits.
      head_features: float32 [None, units]; defaults to the next cached-features batch.
      head_logits: the head over head_features.
      loss, batch_accuracy: of the path that trains (cached or full).
      train_op, trainable, global_step: the optimizer step and what it trains.
      model_variables: every model variable, in graph order.
      image_input, feature_input: the two training pipelines; one is initialised.
      use_cache: which path trains.
      cluster_step: in a cluster, the runtime.cluster.TrainStep whose op is train_op; else None.
    """

    images: tf.Tensor
    is_training: tf.Tensor
    features: tf.Tensor
    logits: tf.Tensor
    head_features: tf.Tensor
    head_logits: tf.Tensor
    loss: tf.Tensor
    batch_accuracy: tf.Tensor
    train_op: tf.Operation
    trainable: list
    global_step: tf.Variable
    model_variables: list
    image_input: object
    feature_input: FeatureBatchInput
    use_cache: bool
    cluster_step: object = None


@dataclasses.dataclass(frozen=True)
class Hyperparameters(GraphValues):
    """The training values the classifier's graph is built with: runtime.training.GraphValues
    (batch_size, learning_rate before the plan's multipliers, seed of the random shift, epochs)
    and these (flags of the same names).

    Attributes:
      dropout: dropout rate on fc1 while training.
      shift: training images are shifted by up to this many pixels at random.
    """

    dropout: float = 0.0
    shift: int = 0


@dataclasses.dataclass(frozen=True)
class DataShape:
    """What the graph needs to know of the labelled data.

    Attributes:
      spec: the InputSpec of the images as the data gives them.
      num_classes: the classifier's outputs.
      in_files: the training images are files (an image folder) rather than arrays.
    """

    spec: object
    num_classes: int
    in_files: bool = False

    @classmethod
    def of(cls, data):
        """The shape of a transfer.labelled.LabelledData."""
        return cls(data.spec, data.num_classes, data.in_files)


def build(network, plan, shape, spec, hyper, use_cache, task=None, total_steps=None):
    """Builds the transfer classifier's training graph into the default graph.

    Args:
      network: a models.networks.Network.
      plan: the RestorePlan made from :func:`variables_of`'s variables.
      shape: the data's DataShape.
      spec: the network's InputSpec.
      hyper: the Hyperparameters.
      use_cache: train the head on cached features (see :func:`cache_decision`).
      task: a runtime.cluster.ClusterTask, or None for a local run; in a cluster, call
        this under `tf.compat.v1.device(cluster.device_function(task))`.
      total_steps: the global step a cluster run ends at (only with task).

    Returns:
      A :class:`TransferGraph`.
    """
    image_input, feature_input, images = _inputs(network, shape, hyper)
    is_training = v1.placeholder_with_default(True, [], name="is_training")
    features, logits, end_points = _logits(
        network,
        to_network_input(network, images, spec),
        shape.num_classes,
        hyper.dropout,
        is_training,
        plan.batch_norm_training_scopes(),
    )
    model_variables = ckpt.model_variables_of(v1.get_default_graph())
    _check_against_plan(plan, model_variables)
    head_features = v1.placeholder_with_default(feature_input.features, [None, network.feature_units], "head_features")
    with v1.variable_scope(v1.get_variable_scope(), reuse=True):
        head_logits = network.head(
            head_features, shape.num_classes, is_training=is_training, dropout_keep_prob=1.0 - hyper.dropout
        )
    train_logits, labels = (head_logits, feature_input.labels) if use_cache else (logits, image_input.labels)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=train_logits))
    batch_accuracy = tf.reduce_mean(
        tf.cast(tf.equal(tf.argmax(train_logits, 1, output_type=tf.int32), labels), tf.float32)
    )
    global_step = v1.train.get_or_create_global_step()
    updates = () if use_cache else _batch_norm_updates(plan, end_points)
    train_op, trainable, cluster_step = _train_step(loss, plan, model_variables, hyper, updates, task, total_steps)
    return TransferGraph(
        images=images,
        is_training=is_training,
        features=features,
        logits=logits,
        head_features=head_features,
        head_logits=head_logits,
        loss=loss,
        batch_accuracy=batch_accuracy,
        train_op=train_op,
        trainable=trainable,
        global_step=global_step,
        model_variables=model_variables,
        image_input=image_input,
        feature_input=feature_input,
        use_cache=use_cache,
        cluster_step=cluster_step,
    )


def _batch_norm_updates(plan, end_points):
    """The moving-average updates the step runs, for exactly the statistics the plan updates.

    The builder's own (end point `batch_norm_updates`, the toolkit's networks) and, for a
    network written with TF-Slim or tf.layers, its UPDATE_OPS of updated statistics and no
    other; transfer.writes.check_writes then refuses a graph whose UPDATE_OPS would move a
    frozen statistic, or leave an updated one unmoved.
    """
    own = tuple(end_points.get("batch_norm_updates", {}).values())
    return own + tuple(writes.updates_of(plan, v1.get_default_graph()))


def _inputs(network, shape, hyper):
    """The two input pipelines (images from arrays or files, cached features) and the images placeholder.

    Returns:
      (image_input, feature_input, images): `images` defaults to the image pipeline's
      batch, randomly shifted by up to hyper.shift pixels; evaluation feeds it.
    """
    data_spec = shape.spec
    if shape.in_files:
        image_input = image_folder.FileBatches(hyper.batch_size, data_spec)
    else:
        image_input = pipeline.BatchInput(hyper.batch_size)
    feature_input = FeatureBatchInput(hyper.batch_size, network.feature_units)
    shifted = random_shift(image_input.images, hyper.shift, seed=hyper.seed)
    images = v1.placeholder_with_default(
        shifted, [None, data_spec.height, data_spec.width, data_spec.channels], "images"
    )
    return image_input, feature_input, images


def _train_step(loss, plan, model_variables, hyper, updates, task, total_steps):
    """(train op, the variables it trains, the cluster's TrainStep or None), checked against the plan.

    Raises:
      PlanError: when the graph's ops would move a variable the plan freezes, or leave a
        statistic it updates unmoved (transfer.writes.check_writes).
    """
    global_step = v1.train.get_or_create_global_step()
    if task is None:
        train_op, trainable = build_train_op(loss, plan, model_variables, hyper.learning_rate, global_step, updates)
        writes.check_writes(plan, v1.get_default_graph(), [*updates, train_op])
        return train_op, trainable, None
    from runtime import cluster

    optimizer = LearningRateGroups(plan, model_variables, hyper.learning_rate, extra_updates=updates)
    cluster_step = cluster.train_op(
        task, loss, optimizer.var_list, global_step, total_steps, optimizer, hold_every=total_steps // hyper.epochs
    )
    writes.check_writes(plan, v1.get_default_graph(), list(updates))
    return cluster_step.op, optimizer.var_list, cluster_step


def _check_against_plan(plan, model_variables):
    names = [var.op.name for var in model_variables]
    if names != [row.name for row in plan.rows]:
        raise AssertionError("the graph's model variables differ from the ones the plan was made from")
    updated = {row.name for row in plan.rows if row.updated}
    if any(not name.endswith(MOVING_STATISTICS) for name in updated):
        raise AssertionError("only moving statistics can be updated outside the optimizer")


def run_in_batches(sess, fetch, placeholder, batches, feed=None):
    """Runs `fetch` over each numpy batch fed to `placeholder`; returns the outputs concatenated.

    Args:
      sess: the session.
      fetch: the tensor to compute, with a leading batch dimension.
      placeholder: what each batch is fed to.
      batches: an iterable of numpy arrays.
      feed: more feeds for every batch (e.g. is_training False).

    Returns:
      numpy array of the concatenated outputs (empty with fetch's trailing shape when there
      are no batches).
    """
    outputs = [sess.run(fetch, {placeholder: batch, **(feed or {})}) for batch in batches]
    if not outputs:
        return np.zeros([0, *fetch.shape.as_list()[1:]], fetch.dtype.as_numpy_dtype)
    return np.concatenate(outputs)
