"""Writes MNIST digits out as an image folder of PNGs, one subfolder per digit.

    python -m data.make_image_folder OUT                 # OUT/train/<digit>/*.png and OUT/test/<digit>/*.png
    python -m data.make_image_folder OUT --no-split      # OUT/<digit>/*.png: the folder's hash decides the split
    python -m data.make_image_folder OUT --data-dir D    # the four IDX files in D instead of the bundled sample

With split subfolders, train/ and test/ hold exactly the IDX path's own split (for the
bundled sample: its fixed 4,500/500 split), so training from the folder and from the
arrays can be compared. Files are named by their index in that split (train_00042.png),
and PNG is lossless: each file decodes to the very bytes of its digit.

The folder is written into a staging sibling and swapped into place at the end
(runtime.outputs). OUT must be new or empty; --force replaces an image folder this
command wrote earlier, never a folder holding anything else. OUT and the data are checked
before TensorFlow is imported.
"""

import os
import sys

from runtime.errors import UserError
from runtime.outputs import Staged, check
from runtime.quiet import OUTPUT_KEPT, Parser, exit_on_failure, guard_startup, import_tensorflow

KIND = "image-folder"


def write_folder(dataset, out, split_subfolders=True, force=False, log=print):
    """Writes a data set's images as PNGs under ``out``.

    Args:
      dataset: a :class:`data.sources.Dataset`.
      out: the folder to create: new, empty, or with force an earlier image folder of this command.
      split_subfolders: write train/ and test/ (else all digits in one class folder each).
      force: replace an image folder this command wrote earlier.
      log: where the line about folders left by killed runs goes.

    Returns:
      The number of files written.

    Raises:
      UserError: ``out`` may not be written (runtime.outputs.check), or a write failed.
    """
    import tensorflow as tf

    out = check(out, KIND, force, flag="")
    written = 0
    with Staged(out, KIND, force, flag="", log=log) as folder:
        try:
            for split, images, labels in (
                ("train", dataset.train_images, dataset.train_labels),
                ("test", dataset.test_images, dataset.test_labels),
            ):
                base = os.path.join(folder, split) if split_subfolders else folder
                for i, (image, label) in enumerate(zip(images, labels)):
                    class_dir = os.path.join(base, str(int(label)))
                    os.makedirs(class_dir, exist_ok=True)
                    png = tf.io.encode_png(image[..., None]).numpy()
                    with open(os.path.join(class_dir, f"{split}_{i:05d}.png"), "wb") as f:
                        f.write(png)
                    written += 1
        except OSError as e:
            raise UserError(f"cannot write the image folder {out}: {e.strerror or e}") from None
    return written


def main(argv=None):
    parser = Parser(prog="python -m data.make_image_folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to create (new or empty)")
    parser.add_argument("--no-split", dest="split", action="store_false", help="no train/ and test/ subfolders")
    parser.add_argument("--data-dir", help="a directory with the four MNIST IDX files (default: the bundled sample)")
    parser.add_argument("--force", action="store_true", help="replace an image folder this command wrote earlier")
    args = parser.parse_args(argv)
    try:
        out = check(args.out, KIND, args.force, flag="")
        from data import sources

        dataset = sources.load_dataset(data_dir=args.data_dir) if args.data_dir else sources.load_sample()
        import_tensorflow()
        count = write_folder(dataset, out, args.split, args.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    layout = "train/ and test/ subfolders" if args.split else "no split subfolders"
    print(f"wrote {count} PNGs from {dataset.source} to {out} ({layout})")
    return 0


if __name__ == "__main__":
    guard_startup(kept=OUTPUT_KEPT)
    exit_on_failure(main())
