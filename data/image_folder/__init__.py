"""A folder of the user's own images as a data source: one subfolder per class.

Layout: ``DIR/<class>/**/<image>``. Class names are the sorted names of DIR's subfolders;
every image below a class folder belongs to that class, however deeply nested. Names
starting with "." (files and folders) are skipped. Files are JPEG, PNG, BMP, GIF (first
frame) or WebP, recognised by their extension; other files are listed as ignored.

The split is stable: each file goes to train, validation or test by the SHA-1 of its path
relative to its class folder, so the folder can be moved or copied without reshuffling it.
A folder holding ``train/`` and ``test/`` (and optionally ``val/`` or ``validation/``)
subfolders, each with the same class subfolders, is used as split by the user; its
validation set, when there is no ``val/``, is carved out of ``train/`` by the same hash.

Links. Below the image folder, a link to a file is followed (the file is used under the
link's name; a link to nothing is a bad file), and a link to a folder never is: it is listed
in a warning and skipped, class folders included, so no listing can loop or wander out of
the folder. The image folder itself may be a link. A file reached under several names (links,
hard links) is used once, under its first name in listing order; one file in two classes
stops the scan with one line naming both. predict.py walks a folder by the same rule.

Names. Any file name is used as it is, whatever bytes it holds (tf.data is given the bytes of
the path); messages show names through runtime.paths.shown, on one printable line. A class
name must read back from labels.txt (one UTF-8 name per line) exactly, so a class folder
whose name is not UTF-8, holds a line break or another control character, or is blank, stops
the scan with one line naming it.

Identity. The scan reads every usable file's bytes once and keeps their sha256: a run
records them (:meth:`FolderScan.file_digests`), so a resume notices a file rewritten in place.

Bad files never stop a run: :func:`scan` decodes every image once up front (in tf.data,
in parallel) and returns the files that fail with the reason, to report and skip. Files
are decoded by their content, not their extension: a BMP named ``.jpg`` is read as the BMP
it is, and listed among the renamed files so the user knows.

Preprocessing is the network's (:class:`InputSpec`). Any colour mode becomes the network's
channels: grey is copied to RGB, RGB becomes grey by the ITU-R 601 luma weights, an alpha
channel is dropped (transparent pixels keep their stored colour; they are not blended on a
background) unless the network takes 2 or 4 channels (grey or RGB, then alpha: the file's
own, kept, or opaque when it has none; `--channels 4` keeps a PNG's RGBA), 16-bit PNGs
are scaled to 8 bits, palette images are expanded, CMYK JPEGs are converted to RGB by the
decoder. An image already at the network's size is used as it is, bit for bit. Any other size
is resized preserving its aspect ratio (bilinear, antialiased)
until it fits, and padded with black to the network's size, centred.

For the MNIST classifier (:data:`MNIST_INPUT`, grey 28x28) this is not how MNIST itself was
made: there each digit was size-normalised to fit a 20x20 box (aspect kept, antialiased) and
then placed in the 28x28 frame so that its centre of mass sits at the centre. This module
does neither the 20x20 box nor the centre-of-mass shift: a photo of a digit is scaled to
fill 28 pixels on its longer side and centred by its bounding box. Digits that should
look like MNIST need to be white on black, cropped with a margin of about a fifth on each
side; the module inverts nothing and crops nothing.

The package, one concern a module: `scanning` (the layout, the link rule, names, the split,
the identity: `scan` and `FolderScan`), `decoding` (the content check, the pixel bound and
the decoder, `InputSpec` and `preprocess`) and `batches` (tf.data input: `make_dataset`,
`read_images`, `FileBatches`). The names the rest of the toolkit uses are re-exported here.
"""

from data.image_folder.batches import FileBatches, iterate_images, make_dataset, read_images
from data.image_folder.decoding import (
    MNIST_INPUT,
    InputSpec,
    _decode_failures,
    _find_bad,
    decode,
    fit_and_pad,
    preprocess,
    to_channels,
)
from data.image_folder.scanning import (
    IMAGE_EXTENSIONS,
    SPLITS,
    FolderScan,
    check_not_flat,
    class_names,
    is_image_folder,
    scan,
    split_of,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MNIST_INPUT",
    "SPLITS",
    "FileBatches",
    "FolderScan",
    "InputSpec",
    "_decode_failures",
    "_find_bad",
    "class_names",
    "decode",
    "fit_and_pad",
    "check_not_flat",
    "is_image_folder",
    "iterate_images",
    "make_dataset",
    "preprocess",
    "read_images",
    "scan",
    "split_of",
    "to_channels",
]
