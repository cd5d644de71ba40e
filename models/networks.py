"""The network registry: the one place a network is described.

TF-Slim's nets_factory maps a name to a builder, and its preprocessing_factory maps the
same name to a preprocessing function; here one frozen `Network` record carries both,
plus what training, prediction, export and inspection need to know about the network:
its input size and channels, its class count and the names of its classes, and its head
scopes (what `--restore backbone` leaves out and what a new head of the user's classes
replaces), and what each command asks of it (the --image-size it takes, the end points
`look` probes, the layer line of an export's model card). Every entry point asks
`get(name)`; nothing else hard-codes a network, and tests/models/test_registry.py fails when a
module outside models/ decides by a network's name.

Builders share one signature, TF-Slim's:
`build(images, num_classes=<default>, is_training=False) -> (net, end_points)`, where
`num_classes=None` returns the features that the head reads ([batch, channels]) and
`end_points["batch_norm_updates"]` holds the BatchNorm update ops (see models.batch_norm).
"""

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf

from models import cae, classifier, efficientnet_lite, mobilenet_v1, resnet_v1, vgg
from models.scopes import ENCODER_SCOPES, HEAD_SCOPES

IMAGENET_CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")
# The name maps of transfer.maps: a registry network's published PyTorch layout <-> its variables.
NAME_MAPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "maps")
# TF-Slim vgg_preprocessing's _R_MEAN, _G_MEAN, _B_MEAN (also used for ResNet v1).
VGG_MEAN_RGB = (123.68, 116.78, 103.94)
# The release's MEAN_RGB and STDDEV_RGB for EfficientNet-Lite (efficientnet_lite_builder.py).
EFFICIENTNET_LITE_MEAN = 127.0
EFFICIENTNET_LITE_STDDEV = 128.0
# Two of ImageNet's classes, what `look ideal` draws for a pretrained ImageNet head (all 1,000 are too many).
IMAGENET_EXAMPLE_CLASSES = "tabby,zebra"


def vgg_preprocess(images):
    """RGB in [0, 255] minus the ImageNet channel means (TF-Slim vgg_preprocessing)."""
    return tf.cast(images, tf.float32) - tf.constant(VGG_MEAN_RGB, tf.float32)


def inception_preprocess(images):
    """RGB in [0, 255] scaled to [-1, 1] (TF-Slim inception_preprocessing, used by MobileNet v1)."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def efficientnet_lite_preprocess(images):
    """RGB in [0, 255] to (x - 127) / 128, the EfficientNet-Lite release's normalisation."""
    return (tf.cast(images, tf.float32) - EFFICIENTNET_LITE_MEAN) / EFFICIENTNET_LITE_STDDEV


def unit_preprocess(images):
    """Grey levels in [0, 255] to [0, 1], what the digit classifier was trained on."""
    return tf.cast(images, tf.float32) / 255.0


def _cae_classifier(images, num_classes=10, is_training=False):
    """The digit classifier under the shared builder signature.

    `is_training` is accepted for the signature and unused: this builder has no dropout
    (use models.classifier for that) and no BatchNorm. With num_classes=None it builds
    the encoder only and returns conv2 flattened, the features its head (fc1, logits) reads.
    """
    del is_training
    if num_classes is None:
        end_points = cae.encoder(images)
        net = end_points["features"]
    else:
        end_points = classifier.build_classifier(images, num_classes)
        net = end_points["logits"]
    end_points["batch_norm_updates"] = {}
    return net, end_points


def _cae_head(features, num_classes, is_training=False, dropout_keep_prob=1.0):
    """fc1 and logits over conv2's flattened features, as models.classifier.head builds them."""
    rate = 1.0 - dropout_keep_prob
    return classifier.head(features, num_classes, rate, is_training if rate > 0 else None)["logits"]


@dataclasses.dataclass(frozen=True)
class Network:
    """What the toolkit knows about one network.

    Attributes:
      name: the registry name, what `--network` takes.
      build: the builder, `build(images, num_classes, is_training) -> (net, end_points)`.
      head: `head(features, num_classes, is_training, dropout_keep_prob) -> logits`, the
        builder's classification layers alone over `build(num_classes=None)`'s features,
        creating the same variables (enter a reusing scope to share the builder's); what
        a cached-features run trains, and what a new head of the user's classes is.
      image_size: (height, width) the pretrained weights expect.
      channels: input channels (3 for RGB, 1 for the digit classifier).
      preprocess: maps images in [0, 255] (float or uint8 tensor, RGB) to the network's input.
      preprocess_alike: whether preprocess does one scalar arithmetic to every channel, so
        that it takes images of any channel count as they are (a grey image one channel,
        not three); False: it is for RGB alone, and images of other channels go through it
        channel by channel (transfer.graph.preprocess_channels).
      num_classes: the pretrained head's width.
      feature_units: width of the features the head reads (`build(num_classes=None)`).
      label_offset: logit index of class 0 of the names file (1 for MobileNet v1, whose
        logit 0 is "background").
      head_scopes: variable scopes of the head: what `--restore backbone` leaves out
        and a new head replaces. Everything else the builder creates is the backbone.
      block_scopes: the backbone's stages from input to output, for fine-tuning the
        top ones (e.g. `--lr-mult` on the last two).
      scope: the outer variable scope, or "" for networks without one.
      class_names_file: one class name per line ("#" lines are comments), or None
        when the classes are the digits 0..num_classes-1.
      crop_fraction: central crop (of the shorter side) taken before resizing to
        image_size in evaluation: 224/256 for the TF-Slim nets and EfficientNet-Lite.
      title: what messages call the network ("digit classifier"); its name by default.
      resizable: whether `--image-size` applies (the network takes any square input
        from min_image_size up), or it takes image_size only.
      min_image_size: the smallest `--image-size` it takes, and min_size_reason why.
      restore_presets: the scope presets of transfer.selection beyond all, none and
        backbone that name this network's scopes (the digit classifier's conv and fc).
      probe_end_points: the end points `look features` probes, in build order.
      first_conv: the checkpoint name of the first convolution's kernel [k, k, in, out]
        (what `look features` draws).
      layers: the one-line layer description an export's model card gives, or None for
        a generic one.
      photo_note: the model card's advice on the photos to feed it.
      name_map: the file in NAME_MAPS_DIR that maps a published PyTorch state_dict of
        this network onto its variables and back (transfer.maps), or "" for none.
      example_classes: the pretrained head's classes `look ideal` draws when --classes
        is not given: a comma list of class names, or "all".
      keras: the Keras 3 model with this network's arithmetic that transfer.keras_bridge
        builds (a key of its TWINS), or "" when Keras has none.
    """

    name: str
    build: Callable
    head: Callable
    image_size: tuple[int, int]
    channels: int
    preprocess: Callable
    num_classes: int
    feature_units: int
    head_scopes: tuple[str, ...]
    block_scopes: tuple[str, ...]
    scope: str = ""
    label_offset: int = 0
    class_names_file: str | None = None
    crop_fraction: float = 1.0
    title: str = ""
    resizable: bool = True
    min_image_size: int = 1
    min_size_reason: str = ""
    restore_presets: tuple[str, ...] = ()
    probe_end_points: tuple[str, ...] = ("features",)
    first_conv: str = ""
    layers: str | None = None
    photo_note: str = "no central crop: crop the subject yourself if it fills little of the photo"
    name_map: str = ""
    example_classes: str = "all"
    keras: str = ""
    preprocess_alike: bool = False

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", self.name)

    @property
    def variable_scopes(self):
        """The variable scopes the network owns: its outer scope, or its blocks and head."""
        return (self.scope,) if self.scope else (*self.block_scopes, *self.head_scopes)

    def input_shape(self, batch=None):
        """[batch, height, width, channels] of the builder's input."""
        return [batch, *self.image_size, self.channels]

    def class_names(self):
        """One name per logit, index = logit index.

        Returns:
          A list of num_classes strings; "background" at the offset positions.

        Raises:
          ValueError: if the names file does not hold num_classes - label_offset names.
        """
        if self.class_names_file is None:
            return [str(index) for index in range(self.num_classes)]
        with open(self.class_names_file, encoding="utf-8") as f:
            names = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
        if len(names) != self.num_classes - self.label_offset:
            raise ValueError(
                f"{self.class_names_file} holds {len(names)} class names, "
                f"{self.name} needs {self.num_classes - self.label_offset}"
            )
        return ["background"] * self.label_offset + names

    def is_head_variable(self, name):
        """Whether a variable name (no ":0") is under one of the head scopes, at the "/" boundary."""
        return any(name.startswith(scope + "/") for scope in self.head_scopes)


_CROP_224_OF_256 = 224 / 256


def _resnet_blocks():
    return ("resnet_v1_50/conv1",) + tuple(f"resnet_v1_50/{block[0]}" for block in resnet_v1.BLOCKS)


def _mobilenet_blocks():
    scopes = ["MobilenetV1/Conv2d_0"]
    for index in range(1, len(mobilenet_v1.LAYERS)):
        scopes += [f"MobilenetV1/Conv2d_{index}_depthwise", f"MobilenetV1/Conv2d_{index}_pointwise"]
    return tuple(scopes)


_EFFICIENTNET_BLOCKS = (
    ("efficientnet-lite0/stem",)
    + tuple(f"efficientnet-lite0/blocks_{index}" for index in range(len(efficientnet_lite.block_specs())))
    + ("efficientnet-lite0/head/conv2d", "efficientnet-lite0/head/tpu_batch_normalization")
)


def _imagenet(module, build, **fields):
    """The record of an ImageNet network whose head and scope live in `module` (TF-Slim's layout):
    224x224 RGB, ImageNet's class names; `fields` hold the rest of its facts."""
    return Network(
        build=build,
        head=module.head,
        image_size=(224, 224),
        channels=3,
        scope=module.SCOPE,
        class_names_file=IMAGENET_CLASSES_FILE,
        example_classes=IMAGENET_EXAMPLE_CLASSES,
        **fields,
    )


NETWORKS = {
    network.name: network
    for network in (
        Network(
            name="cae",
            build=_cae_classifier,
            head=_cae_head,
            image_size=cae.IMAGE_SHAPE[:2],
            channels=cae.IMAGE_SHAPE[2],
            preprocess=unit_preprocess,
            preprocess_alike=True,
            num_classes=10,
            feature_units=cae.ENCODER_UNITS,
            head_scopes=HEAD_SCOPES,
            block_scopes=ENCODER_SCOPES,
            title="digit classifier",
            resizable=False,
            restore_presets=("conv", "fc"),
            probe_end_points=("conv1", "conv2", "fc1"),
            first_conv="conv1/kernel",
            layers="conv1 (5x5/2, 16, relu), conv2 (5x5/2, 32, relu), fc1 (1568->200, relu), logits",
            photo_note="MNIST digits are white on black; invert dark-on-light photos before predicting",
            keras="digit_classifier",
        ),
        _imagenet(
            vgg,
            vgg.vgg_16,
            name="vgg_16",
            preprocess=vgg_preprocess,
            num_classes=1000,
            feature_units=vgg.FC_UNITS,
            head_scopes=("vgg_16/fc8",),
            block_scopes=tuple(f"vgg_16/conv{n}" for n in range(1, 6)) + ("vgg_16/fc6", "vgg_16/fc7"),
            crop_fraction=_CROP_224_OF_256,
            min_image_size=224,
            min_size_reason="fc6 is a 7x7 VALID convolution",
            first_conv="vgg_16/conv1/conv1_1/weights",
            name_map="vgg_16.json",
            keras="VGG16",
        ),
        _imagenet(
            resnet_v1,
            resnet_v1.resnet_v1_50,
            name="resnet_v1_50",
            preprocess=vgg_preprocess,
            num_classes=1000,
            feature_units=resnet_v1.BLOCKS[-1][1] * resnet_v1.EXPANSION,
            head_scopes=("resnet_v1_50/logits",),
            block_scopes=_resnet_blocks(),
            crop_fraction=_CROP_224_OF_256,
            first_conv="resnet_v1_50/conv1/weights",
        ),
        _imagenet(
            mobilenet_v1,
            mobilenet_v1.mobilenet_v1,
            name="mobilenet_v1",
            preprocess=inception_preprocess,
            preprocess_alike=True,
            num_classes=mobilenet_v1.NUM_CLASSES,
            label_offset=1,
            feature_units=mobilenet_v1.LAYERS[-1][1],
            head_scopes=("MobilenetV1/Logits",),
            block_scopes=_mobilenet_blocks(),
            crop_fraction=0.875,
            first_conv="MobilenetV1/Conv2d_0/weights",
            name_map="mobilenet_v1.json",
            keras="MobileNet",
        ),
        _imagenet(
            efficientnet_lite,
            efficientnet_lite.efficientnet_lite0,
            name="efficientnet_lite0",
            preprocess=efficientnet_lite_preprocess,
            preprocess_alike=True,
            num_classes=efficientnet_lite.NUM_CLASSES,
            feature_units=efficientnet_lite.HEAD_FILTERS,
            head_scopes=("efficientnet-lite0/head/dense",),
            block_scopes=_EFFICIENTNET_BLOCKS,
            crop_fraction=_CROP_224_OF_256,
            probe_end_points=("stem", "block_3", "block_8", "block_15", "features"),
            first_conv="efficientnet-lite0/stem/conv2d/kernel",
            name_map="efficientnet_lite0.json",
        ),
    )
}
NAMES = tuple(NETWORKS)
DEFAULT = "cae"


def register(network):
    """Adds a network to the registry, before the flags that list NAMES are built.

    Raises:
      ValueError: for a name the registry already holds.
    """
    global NAMES
    if network.name in NETWORKS:
        raise ValueError(f"network {network.name!r} is already registered")
    NETWORKS[network.name] = network
    NAMES = tuple(NETWORKS)


def with_name_maps():
    """The networks that have a name map (Network.name_map), each with its map file's path."""
    return [
        (network, os.path.join(NAME_MAPS_DIR, network.name_map)) for network in NETWORKS.values() if network.name_map
    ]


def get(name):
    """The registry entry of a network.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NAMES)}") from None
