"""Writes MNIST digits out as an image folder of PNGs, one subfolder per digit.

    python -m data.make_image_folder OUT                 # OUT/train/<digit>/*.png and OUT/test/<digit>/*.png
    python -m data.make_image_folder OUT --no-split      # OUT/<digit>/*.png: the folder's hash decides the split
    python -m data.make_image_folder OUT --data-dir D    # the four IDX files in D instead of the bundled sample

With split subfolders, train/ and test/ hold exactly the IDX path's own split (for the
bundled sample: its fixed 4,500/500 split), so training from the folder and from the
arrays can be compared. Files are named by their index in that split (train_00042.png),
and PNG is lossless: each file decodes to the very bytes of its digit.

The folder is written into a temporary sibling and renamed into place at the end; an
existing OUT is never written into or replaced.
"""

import argparse
import os
import shutil
import sys

from runtime.errors import UserError
from runtime.quiet import import_tensorflow


def write_folder(dataset, out, split_subfolders=True):
    """Writes a data set's images as PNGs under ``out``.

    Args:
      dataset: a :class:`data.sources.Dataset`.
      out: the folder to create; must not exist.
      split_subfolders: write train/ and test/ (else all digits in one class folder each).

    Returns:
      The number of files written.

    Raises:
      UserError: ``out`` exists, or its parent cannot be written.
    """
    import tensorflow as tf

    out = os.path.abspath(os.path.expanduser(os.fspath(out)))
    if os.path.lexists(out):
        raise UserError(f"{out} already exists: choose a new folder (nothing was written)")
    tmp = f"{out}.{os.getpid()}.part"
    written = 0
    try:
        for split, images, labels in (
            ("train", dataset.train_images, dataset.train_labels),
            ("test", dataset.test_images, dataset.test_labels),
        ):
            base = os.path.join(tmp, split) if split_subfolders else tmp
            for i, (image, label) in enumerate(zip(images, labels)):
                class_dir = os.path.join(base, str(int(label)))
                os.makedirs(class_dir, exist_ok=True)
                png = tf.io.encode_png(image[..., None]).numpy()
                with open(os.path.join(class_dir, f"{split}_{i:05d}.png"), "wb") as f:
                    f.write(png)
                written += 1
        os.rename(tmp, out)
    except OSError as e:
        raise UserError(f"cannot write the image folder {out}: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data.make_image_folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to create")
    parser.add_argument("--no-split", dest="split", action="store_false", help="no train/ and test/ subfolders")
    parser.add_argument("--data-dir", help="a directory with the four MNIST IDX files (default: the bundled sample)")
    args = parser.parse_args(argv)
    try:
        import_tensorflow()
        from data import sources

        dataset = sources.load_dataset(data_dir=args.data_dir) if args.data_dir else sources.load_sample()
        count = write_folder(dataset, args.out, args.split)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    layout = "train/ and test/ subfolders" if args.split else "no split subfolders"
    print(f"wrote {count} PNGs from {dataset.source} to {os.path.abspath(args.out)} ({layout})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
