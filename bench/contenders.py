"""The contenders the throughput benchmark times, each built once and run in windows.

Every contender has `warm_up()` (build, first steps: grappler, oneDNN primitives,
Keras tracing), `reserve(steps)` (input for that many steps, prepared untimed),
`run(steps)` returning a `Sample`, and `close()`. `units` is images for
the training steps and FLOPs for the matmul probes.

Sessions: TensorFlow shares thread pools across a process. The inter-op pool of every
`Session` is the pool the *first* session created (unless `use_per_session_threads`),
and the intra-op pool of every CPU device is the one the first device created (unless
TF_OVERRIDE_GLOBAL_THREADPOOL is set). In one process holding many sessions, a
session's thread settings would therefore be silently ignored; `bench.throughput` sets
the environment variable and `isolated()` sets `use_per_session_threads`, so that each
session gets the pools its config asks for, as it would as the only session of a
training run.
"""

import collections
import math
import time

import numpy as np
import tensorflow as tf

from autoencoder import graph as ae_graph
from bench import flops
from data import image_folder, names, pipeline
from models import networks
from models.cae import ENCODER_SCOPES, ENCODER_UNITS, build_autoencoder, reconstruction_loss
from models.classifier import build_classifier
from models.scopes import HEAD_SCOPES
from runtime.session import session_config
from runtime.training import LocalStep, LoopHooks, LoopSettings, Span, train_loop
from transfer import graph as transfer_graph
from transfer import labelled
from transfer.plan import RestoreSelection, VariableInfo, make_plan
from transfer.selection import in_any_scope

v1 = tf.compat.v1

LEARNING_RATE = 1e-3
SEED = 0
NUM_CLASSES = 10

Sample = collections.namedtuple("Sample", "units wall cpu")
Sample.__doc__ = "One timed window: units done (images or FLOPs), wall seconds, process CPU seconds."


def isolated(config):
    """A copy of a session ConfigProto whose inter-op pool belongs to this session alone."""
    config = v1.ConfigProto.FromString(config.SerializeToString())
    config.use_per_session_threads = True
    return config


class _Clock:
    """Wall and process CPU time of a window (CPU time counts every thread of the process)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class _NoCheckpoints:
    """Stands in for runtime.checkpoints.Checkpointer: train_loop saves at the end of a call."""

    def save(self, sess, step):
        return None


class _TrainLoopContender:
    """Our step: a graph fed by an index-stream pipeline, run through runtime.training.train_loop.

    Subclasses build `graph`, `train_op`, `loss`, `init` and `_start_input(sess, stream)`.
    """

    def __init__(self, name, dataset, batch_size, inter, intra):
        self.name = name
        self.dataset = dataset
        self.batch_size = batch_size
        self.config = isolated(session_config(intra_op_threads=intra, inter_op_threads=inter))
        self.steps_per_epoch = pipeline.steps_per_epoch(dataset.num_train, batch_size)
        self.step = 0
        self._stream_end = 0
        self.sess = None

    def warm_up(self):
        self._build()
        self.sess = v1.Session(graph=self.graph, config=self.config)
        self.sess.run(self.init)
        self._after_init()
        self.run(5)

    def _after_init(self):
        pass

    def reserve(self, steps):
        """Makes sure the index stream holds `steps` more steps, restarting the pipeline if not.

        A restart (a new iterator, as a resumed run makes) can take a fraction of a
        second, so it happens outside the timed windows and makes room for twice the
        steps asked for: the benchmark reserves all its rounds at once.
        """
        if self._stream_end - self.step < steps:
            self._stream_end = self.step + 2 * steps
            self._start_input(
                pipeline.index_stream(self.dataset.num_train, self.batch_size, SEED, self.step, self._stream_end)
            )

    def run(self, steps):
        self.reserve(steps)
        with _Clock() as clock:
            result = train_loop(
                self.sess,
                LocalStep(self.train_op, self.step),
                self.loss,
                Span(self.step, self.step + steps, self.steps_per_epoch),
                LoopSettings(self.batch_size),
                _NoCheckpoints(),
                LoopHooks(log=lambda line: None, progress_every_secs=math.inf),
            )
        self.step = result.final_step
        return Sample(steps * self.batch_size, clock.wall, clock.cpu)

    def close(self):
        if self.sess is not None:
            self.sess.close()


class _NothingToReserve:
    def reserve(self, steps):
        """Nothing to prepare: this contender's input never runs out."""


class OursAutoencoder(_TrainLoopContender):
    """The autoencoder step of `train_autoencoder.py` at its default flags, built by autoencoder.graph.build.

    The graph and the train op are the script's own (autoencoder.graph is what
    autoencoder.train.run calls), fed by its BatchInput and run with session_config.
    `transpose_implementation` is the one way it may differ (bench.experiments times the other).
    """

    transpose_implementation = "subpixel"

    def _build(self):
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(SEED)
            self.built = build_autoencoder_graph(self.batch_size, self.transpose_implementation)
            model_variables = self.built.model_variables
            flops.check_kernels(flops.AUTOENCODER_LAYERS, model_variables)
            self.loss, self.train_op = self.built.loss, self.built.train_op
            self.num_weights = sum(int(np.prod(var.shape)) for var in model_variables)
            self.init = v1.global_variables_initializer()

    def _start_input(self, stream):
        self.built.batch_input.initialize(self.sess, self.dataset.train_images, self.dataset.train_labels, stream)


def build_autoencoder_graph(batch_size, transpose_implementation="subpixel"):
    """The graph train_autoencoder.py builds at its default flags on IDX arrays, into the default graph."""
    hyper = ae_graph.Hyperparameters(batch_size, LEARNING_RATE, seed=SEED)
    return ae_graph.build(hyper, in_files=False, transpose_implementation=transpose_implementation)


class OursTransfer(_TrainLoopContender):
    """The classifier step of `train_transfer.py --restore conv`, built by transfer.graph.build.

    The graph, the plan and the train op are the script's own (transfer.graph is what
    transfer.train.run calls); conv1 and conv2 are frozen by a plan made against a
    stand-in "checkpoint" with the graph's own names (the weights stay random, which does
    not change the speed). With `cached`, the head trains on conv features computed
    once, as `--cache-features auto` does; without, every step runs the frozen encoder.
    """

    def __init__(self, name, dataset, batch_size, inter, intra, cached):
        super().__init__(name, dataset, batch_size, inter, intra)
        self.cached = cached

    def _build(self):
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(SEED)
            self.built = build_transfer_graph(self.dataset, self.batch_size, self.cached)
            flops.check_kernels(flops.CLASSIFIER_LAYERS, self.built.model_variables)
            self.loss, self.train_op = self.built.loss, self.built.train_op
            self.init = v1.global_variables_initializer()

    def _after_init(self):
        if self.cached:
            # Computed once per contender, outside every timed window, as the script does before training.
            batches = labelled.Examples(self.dataset.train_labels, images=self.dataset.train_images).batches(None, 500)
            self.features = transfer_graph.run_in_batches(
                self.sess, self.built.features, self.built.images, batches, {self.built.is_training: False}
            )

    def _start_input(self, stream):
        labels = self.dataset.train_labels.astype(np.int64)
        if self.cached:
            self.built.feature_input.initialize(self.sess, self.features, labels, stream)
        else:
            self.built.image_input.initialize(self.sess, self.dataset.train_images, labels, stream)


def build_transfer_graph(dataset, batch_size, cached):
    """The graph train_transfer.py builds for `--restore conv` on `dataset`, into the default graph."""
    network = networks.get(networks.DEFAULT)
    spec = transfer_graph.input_spec(network)
    shape = transfer_graph.DataShape(image_folder.MNIST_INPUT, len(names.DIGITS))
    graph_infos = transfer_graph.variables_of(network, shape.num_classes, shape.spec, spec)
    stand_in = [VariableInfo(info.name, info.shape, info.dtype) for info in graph_infos]
    plan = make_plan(graph_infos, stand_in, RestoreSelection(ENCODER_SCOPES), "(benchmark stand-in)")
    hyper = transfer_graph.Hyperparameters(batch_size, LEARNING_RATE, seed=SEED)
    use_cache, _ = transfer_graph.cache_decision(plan, network, hyper.shift, "on" if cached else "off")
    return transfer_graph.build(network, plan, shape, spec, hyper, use_cache)


class _TextbookContender(_NothingToReserve):
    """The textbook loop: the same model graph, small numpy batches through feed_dict, ConfigProto()."""

    def __init__(self, name, dataset, batch_size):
        self.name = name
        self.batch_size = batch_size
        self.images = pipeline.to_float_images(dataset.train_images)
        self.labels = dataset.train_labels.astype(np.int32)
        self._order = np.random.default_rng(SEED).permutation(len(self.images))
        self._position = 0
        self.sess = None

    def warm_up(self):
        graph = tf.Graph()
        with graph.as_default():
            v1.set_random_seed(SEED)
            self.x = v1.placeholder(tf.float32, [None, 28, 28, 1], name="x")
            self.y = v1.placeholder(tf.int32, [None], name="y")
            self.loss = self._build_loss()
            self.train_op = v1.train.AdamOptimizer(LEARNING_RATE).minimize(self.loss, var_list=self._var_list())
            init = v1.global_variables_initializer()
        self.sess = v1.Session(graph=graph, config=isolated(v1.ConfigProto()))
        self.sess.run(init)
        self.run(5)

    def _next_batch(self):
        # Like the textbook's mnist.train.next_batch: a fresh copy each step.
        if self._position + self.batch_size > len(self._order):
            self._position = 0
        rows = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        return self.images[rows], self.labels[rows]

    def run(self, steps):
        fetches = [self.train_op, self.loss]
        with _Clock() as clock:
            for _ in range(steps):
                images, labels = self._next_batch()
                self.sess.run(fetches, feed_dict=self._feed(images, labels))
        return Sample(steps * self.batch_size, clock.wall, clock.cpu)

    def close(self):
        if self.sess is not None:
            self.sess.close()


class TextbookAutoencoder(_TextbookContender):
    def _build_loss(self):
        # The textbook's decoder is tf.layers.conv2d_transpose: not our sub-pixel form.
        return reconstruction_loss(self.x, build_autoencoder(self.x, transpose_implementation="transpose"), "bce")

    def _var_list(self):
        return None  # every trainable variable, as the textbook's minimize(loss)

    def _feed(self, images, labels):
        return {self.x: images}


class TextbookTransfer(_TextbookContender):
    def _build_loss(self):
        logits = build_classifier(self.x, NUM_CLASSES)["logits"]
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=self.y, logits=logits))

    def _var_list(self):
        # Anchored scopes (not the textbook's `"fc" in v.name`): the speed is the same, the selection right.
        return [var for var in v1.trainable_variables() if in_any_scope(var.op.name, HEAD_SCOPES)]

    def _feed(self, images, labels):
        return {self.x: images, self.y: labels}


class _KerasContender(_NothingToReserve):
    """Keras 3 `model.fit` on a tf.data dataset of the same images, eager context defaults.

    Each window is one `fit(steps_per_epoch=steps + 1)`; the timer starts when step 1
    begins and stops at the end of the epoch, so the fit call's set-up and the first
    step (iterator start) are not counted. Only `on_train_batch_begin` is hooked, which
    keeps Keras's asynchronous dispatch of batch-end callbacks as it is without us.
    """

    def __init__(self, name, dataset, batch_size):
        self.name = name
        self.batch_size = batch_size
        self.dataset = dataset

    def warm_up(self):
        import keras

        self.keras = keras
        self.model = self._build_model(keras)
        self.data = self._make_data().repeat().batch(self.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        self.run(3)  # traces the train function

    def run(self, steps):
        keras = self.keras
        window = {}

        class Timer(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == 1:
                    window.update(wall=time.perf_counter(), cpu=time.process_time())

            def on_epoch_end(self, epoch, logs=None):
                window.update(wall=time.perf_counter() - window["wall"], cpu=time.process_time() - window["cpu"])

        self.model.fit(self.data, epochs=1, steps_per_epoch=steps + 1, shuffle=False, verbose=0, callbacks=[Timer()])
        return Sample(steps * self.batch_size, window["wall"], window["cpu"])

    def close(self):
        pass


def _conv_layers(keras, trainable=True):
    return [
        keras.layers.Conv2D(16, 5, strides=2, padding="same", activation="relu", name="conv1", trainable=trainable),
        keras.layers.Conv2D(32, 5, strides=2, padding="same", activation="relu", name="conv2", trainable=trainable),
    ]


class KerasAutoencoder(_KerasContender):
    """The CAE as a Keras Sequential model, BCE summed over each image's pixels, Adam."""

    def _build_model(self, keras):
        model = keras.Sequential(
            [keras.Input((28, 28, 1))]
            + _conv_layers(keras)
            + [
                keras.layers.Flatten(),
                keras.layers.Dense(20, name="latent_var"),
                keras.layers.Dense(ENCODER_UNITS, activation="relu", name="z_matrix"),
                keras.layers.Reshape((7, 7, 32)),
                keras.layers.Conv2DTranspose(16, 5, strides=2, padding="same", activation="relu", name="dconv1"),
                keras.layers.Conv2DTranspose(1, 5, strides=2, padding="same", activation="sigmoid", name="dconv2"),
            ]
        )

        def bce_summed_per_image(targets, reconstruction):
            return keras.ops.sum(keras.ops.binary_crossentropy(targets, reconstruction), axis=(1, 2, 3))

        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=bce_summed_per_image)
        self.num_weights = model.count_params()
        return model

    def _make_data(self):
        images = pipeline.to_float_images(self.dataset.train_images)
        return tf.data.Dataset.from_tensor_slices((images, images))


class KerasFrozen(_KerasContender):
    """The classifier in Keras with conv1 and conv2 `trainable=False`, softmax cross-entropy, Adam."""

    def _build_model(self, keras):
        model = keras.Sequential(
            [keras.Input((28, 28, 1))]
            + _conv_layers(keras, trainable=False)
            + [
                keras.layers.Flatten(),
                keras.layers.Dense(200, activation="relu", name="fc1"),
                keras.layers.Dense(NUM_CLASSES, name="logits"),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        self.num_trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        return model

    def _make_data(self):
        images = pipeline.to_float_images(self.dataset.train_images)
        return tf.data.Dataset.from_tensor_slices((images, self.dataset.train_labels.astype(np.int32)))


class MatmulSession(_NothingToReserve):
    """An n x n float32 matmul of two variables in a tf.compat.v1 session (default threads); units are FLOPs."""

    def __init__(self, name, size):
        self.name = name
        self.size = size
        self.sess = None

    def warm_up(self):
        graph = tf.Graph()
        rng = np.random.default_rng(SEED)
        with graph.as_default():
            # Variables, not constants: grappler would fold a product of constants away.
            a = v1.get_variable(
                "a", initializer=rng.random((self.size, self.size), dtype=np.float32), use_resource=True
            )
            b = v1.get_variable(
                "b", initializer=rng.random((self.size, self.size), dtype=np.float32), use_resource=True
            )
            self.product = tf.matmul(a, b).op  # run as a target: no 16 MB copy back to numpy
            init = v1.global_variables_initializer()
        self.sess = v1.Session(graph=graph, config=isolated(v1.ConfigProto()))
        self.sess.run(init)
        self.run(2)

    def run(self, steps):
        with _Clock() as clock:
            for _ in range(steps):
                self.sess.run(self.product)
        return Sample(steps * 2 * self.size**3, clock.wall, clock.cpu)

    def close(self):
        if self.sess is not None:
            self.sess.close()


class MatmulEager(_NothingToReserve):
    """The same matmul as an eager op (the eager context's default threads)."""

    def __init__(self, name, size):
        self.name = name
        self.size = size

    def warm_up(self):
        rng = np.random.default_rng(SEED)
        self.a = tf.constant(rng.random((self.size, self.size), dtype=np.float32))
        self.b = tf.constant(rng.random((self.size, self.size), dtype=np.float32))
        self.run(2)

    def run(self, steps):
        with _Clock() as clock:
            # Eager ops on the CPU return when their kernel has finished.
            for _ in range(steps):
                tf.linalg.matmul(self.a, self.b)
        return Sample(steps * 2 * self.size**3, clock.wall, clock.cpu)

    def close(self):
        pass
