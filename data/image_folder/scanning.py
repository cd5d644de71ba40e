"""The scan of an image folder: its layout, the link rule, class names, the stable split,
each file used once, its sha256 and its check (data.image_folder.decoding), and what was
found (`FolderScan`, with the data's identity). The rules are stated in the package's
docstring (data.image_folder).
"""

import dataclasses
import hashlib
import os
import unicodedata

import numpy as np

from data import idx
from data.image_folder.decoding import _FORMAT_OF_EXTENSION, _find_bad, _precheck
from runtime.errors import DataError, one_line
from runtime.paths import shown

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "validation", "test")
VALIDATION_DIR_NAMES = ("val", "validation")
# As in TensorFlow's retrain.py: hash values modulo 2^27 spread over 0..100%.
_MAX_HASH = 2**27 - 1
# Below this many training images a class gets a warning (TensorFlow's retrain.py warns below 20 too).
FEW_IMAGES = 20


@dataclasses.dataclass(frozen=True)
class BadFile:
    """A file that cannot be used, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """The files of one split in a fixed order, with their class ids.

    Attributes:
      files: tuple of absolute paths, sorted by (class, relative path).
      labels: int64 array [len(files)] of class ids into the scan's class_names.
      sha256: tuple of the files' sha256 (64 hex digits) as the scan read them.
    """

    files: tuple
    labels: np.ndarray
    sha256: tuple = ()

    def __len__(self):
        return len(self.files)


@dataclasses.dataclass(frozen=True, eq=False)
class FolderScan:
    """What :func:`scan` found in an image folder.

    Attributes:
      root: the folder, absolute.
      layout: "hash" (split by the hash of relative paths) or "subfolders" (train/ and test/ given).
      class_names: tuple of the sorted class folder names; a label is an index into it.
      splits: dict from "train", "validation", "test" to a :class:`Split` of the decodable files.
      bad: tuple of :class:`BadFile`, the image files that cannot be decoded, each listed once.
      renamed: tuple of :class:`BadFile` whose content is an image of another format than the
        extension says; they are decoded by content and used.
      ignored: tuple of paths of files not used: without an image extension, or beside the
        class folders rather than in one.
      folder_links: tuple of paths of links to folders, never followed (see the module docstring).
      duplicates: tuple of :class:`BadFile` naming files already used under another name.
      validation_percent, test_percent: the split shares asked for (test_percent is unused
        with the "subfolders" layout).
    """

    root: str
    layout: str
    class_names: tuple
    splits: dict
    bad: tuple
    renamed: tuple
    ignored: tuple
    validation_percent: float
    test_percent: float
    folder_links: tuple = ()
    duplicates: tuple = ()

    @property
    def num_classes(self):
        return len(self.class_names)

    def counts(self):
        """Returns {class name: {split: number of usable images}}."""
        table = {name: dict.fromkeys(SPLITS, 0) for name in self.class_names}
        for split_name, split in self.splits.items():
            for label, count in zip(*np.unique(split.labels, return_counts=True)):
                table[self.class_names[label]][split_name] = int(count)
        return table

    def describe(self):
        """Returns the JSON-ready summary to record with a run (config.json, metrics.json)."""
        return {
            "source": f"image-folder:{self.root}",
            "layout": self.layout,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            **{f"num_{name}": len(self.splits[name]) for name in SPLITS},
            "validation_percent": self.validation_percent,
            "test_percent": self.test_percent if self.layout == "hash" else None,
            "num_bad_files": len(self.bad),
            "bad_files": [dataclasses.asdict(bad) for bad in self.bad],
            "num_renamed_files": len(self.renamed),
            "num_ignored_files": len(self.ignored),
            "num_folder_links_skipped": len(self.folder_links),
            "num_duplicate_names": len(self.duplicates),
        }

    def _relative(self, path):
        return path[len(self.root) :].lstrip(os.sep).replace(os.sep, "/")

    def identity(self):
        """`image-folder:<class names>#<hash>` of the class names and each used file's split, label and path.

        Paths are relative to the folder, so a moved folder keeps its identity. The files'
        contents are not in it: :meth:`file_digests` covers them.
        """
        digest = hashlib.sha256()
        for split in SPLITS:
            for path, label in zip(self.splits[split].files, self.splits[split].labels):
                digest.update(f"{split}\0{label}\0".encode() + os.fsencode(self._relative(path)) + b"\n")
        return f"image-folder:{'|'.join(self.class_names)}#{digest.hexdigest()[:16]}"

    def file_digests(self):
        """{path relative to the folder ('/' separators): sha256} of every used file, sorted by path.

        JSON keeps any name exactly (bytes that are not UTF-8 are written as \\udcXX escapes
        and read back as the same surrogates), so config.json can hold it.
        """
        pairs = [
            (self._relative(path), sha)
            for split in SPLITS
            for path, sha in zip(self.splits[split].files, self.splits[split].sha256)
        ]
        return dict(sorted(pairs))

    def report_lines(self):
        """Returns the lines that tell the user what was found and what was skipped, each file once."""
        sizes = ", ".join(f"{name} {len(self.splits[name])}" for name in SPLITS)
        lines = [f"image folder {shown(self.root)}: {self.num_classes} classes, {sizes} ({self.layout} split)"]
        if self.bad:
            lines.append(f"skipped {len(self.bad)} image files that cannot be decoded:")
            lines += [f"  {shown(bad.path)}: {bad.reason}" for bad in self.bad]
        if self.renamed:
            lines.append(f"decoded {len(self.renamed)} files by their content, not their extension:")
            lines += [f"  {shown(renamed.path)}: {renamed.reason}" for renamed in self.renamed]
        if self.duplicates:
            lines.append(f"used once {len(self.duplicates)} files that are another name of a file already used:")
            lines += [f"  {shown(dup.path)}: {dup.reason}" for dup in self.duplicates]
        if self.ignored:
            listed = ", ".join(map(shown, self.ignored[:3])) + (", ..." if len(self.ignored) > 3 else "")
            lines.append(
                f"ignored {len(self.ignored)} files outside the class folders or without an image extension ({listed})"
            )
        if self.folder_links:
            listed = ", ".join(_link_shown(link) for link in self.folder_links[:3])
            more = ", ..." if len(self.folder_links) > 3 else ""
            lines.append(
                f"warning: skipped {len(self.folder_links)} links to folders, which are never followed: {listed}{more}"
            )
        few = [f"{name} ({count['train']})" for name, count in self.counts().items() if count["train"] < FEW_IMAGES]
        if few:
            lines.append(f"warning: fewer than {FEW_IMAGES} training images in class {', '.join(few)}")
        return lines


def split_of(relative_path, validation_percent, test_percent):
    """Returns the split of a file from its path relative to its class folder.

    The path is hashed with '/' separators whatever the platform, so a folder copied
    between systems keeps its split too.

    Args:
      relative_path: path below the class folder, e.g. "2019/img_001.jpg".
      validation_percent: share of files that go to validation, in [0, 100).
      test_percent: share of files that go to test; the two add up to less than 100.

    Returns:
      "train", "validation" or "test".
    """
    key = os.fsencode(relative_path.replace(os.sep, "/"))
    percentage = (int(hashlib.sha1(key).hexdigest(), 16) % (_MAX_HASH + 1)) * (100.0 / _MAX_HASH)
    if percentage < validation_percent:
        return "validation"
    if percentage < validation_percent + test_percent:
        return "test"
    return "train"


def _visible(name):
    return not name.startswith(".")


def _is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _link_shown(path):
    try:
        return f"{shown(path)} (-> {shown(os.readlink(path))})"
    except OSError:
        return shown(path)


def _entries_of(directory):
    """Returns (visible folders, other visible entries, links to folders) of a directory, each sorted by name.

    The link rule lives here: a folder is entered only when it is not a link; a link to a
    folder is returned apart, to be reported and skipped; anything else (files, links to
    files, links to nothing) is a file.
    """
    try:
        entries = sorted((e for e in os.scandir(directory) if _visible(e.name)), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"image folder {shown(directory)}: cannot list it: {one_line(e)}") from e
    folders, files, links = [], [], []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.name)
        elif entry.is_symlink() and entry.is_dir():
            links.append(entry.path)
        else:
            files.append(entry.path)
    return folders, files, links


def _class_dirs(directory):
    return _entries_of(directory)[0]


def _walk(top):
    """Yields (folder, its files' paths, its links to folders) below top, depth first in name order.

    Never enters a link to a folder (see :func:`_entries_of`), so it ends on any tree. A
    folder that cannot be listed (no permission) is skipped, as os.walk skips it.
    """
    stack = [top]
    while stack:
        here = stack.pop()
        try:
            folders, files, links = _entries_of(here)
        except DataError:
            if here == top:
                raise
            continue
        yield here, files, links
        stack += [os.path.join(here, name) for name in reversed(folders)]


def _list_class(class_dir):
    """Returns (image files as (relative path, path), ignored paths, links to folders) below one class folder."""
    images, ignored, folder_links = [], [], []
    for _, files, links in _walk(class_dir):
        folder_links += links
        for path in files:
            if _is_image_name(path):
                images.append((os.path.relpath(path, class_dir).replace(os.sep, "/"), path))
            else:
                ignored.append(path)
    return images, ignored, folder_links


def class_names(root):
    """The class names of an image folder, from its listing alone (nothing is decoded)."""
    root = os.path.expanduser(os.fspath(root))
    top = _class_dirs(root)
    if "train" in top and "test" in top:
        return tuple(_class_dirs(os.path.join(root, "train")))
    return tuple(top)


def is_image_folder(path):
    """Tells an image folder from a folder of IDX files.

    Args:
      path: a directory path.

    Returns:
      True when ``path`` is a directory without the MNIST IDX files that has a visible
      subfolder with at least one image file below it (directly or in train/ or test/).
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(path) or idx.find_idx_files(path)[0]:
        return False
    for name in _class_dirs(path):
        for _, files, _ in _walk(os.path.join(path, name)):
            if any(map(_is_image_name, files)):
                return True
    return False


def check_not_flat(path):
    """Refuses a folder that is no image folder but holds image files itself: their classes are missing.

    Raises:
      DataError: naming the folder and what an image folder holds, when `path` (no IDX folder)
        has image files directly in it.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(path) or idx.find_idx_files(path)[0] or is_image_folder(path):
        return
    try:
        names = [name for name in os.listdir(path) if not name.startswith(".")]
    except OSError:
        return  # the IDX reader says why it cannot list it
    if any(map(_is_image_name, names)):
        raise DataError(
            f"{shown(path)} holds image files but no class subfolders: an image folder holds one subfolder of "
            "images per class (or train/ and test/ holding those), named after the class"
        )


def _gather(root, layout_dirs):
    """Lists each split folder: ({split dir key: {class: [(rel, path)]}}, ignored paths, links to folders)."""
    listing, ignored, folder_links = {}, [], []
    # Files lying beside the class folders belong to no class: listed, so a folder whose
    # images were never sorted into class folders does not look empty for no reason.
    for directory in sorted({root, *layout_dirs.values()}):
        _, files, links = _entries_of(directory)
        ignored += files
        folder_links += links
    for key, directory in layout_dirs.items():
        per_class = {}
        for name in _class_dirs(directory):
            files, skipped, links = _list_class(os.path.join(directory, name))
            per_class[name] = files
            ignored += skipped
            folder_links += links
        listing[key] = per_class
    return listing, ignored, folder_links


def scan(root, validation_percent=10.0, test_percent=10.0, min_per_class=1):
    """Lists, checks and splits an image folder, before anything trains.

    Args:
      root: the image folder (see the module docstring for its layout).
      validation_percent: share of each class's files for validation, by hash; also how
        validation is carved from ``train/`` when the folder has no ``val/``. 0 leaves the
        validation split empty (for a caller that carves its own).
      test_percent: share for test, by hash; unused when the folder has ``train/``/``test/``.
      min_per_class: fewest usable training images a class may have (at least 1).

    Returns:
      A :class:`FolderScan`.

    Raises:
      DataError: not a folder; fewer than 2 classes; percentages out of range; a class
        whose every image is bad; nothing decodable; a class with no image in a split
        that should have some, or with fewer than ``min_per_class`` training images; a
        ``train/``/``test/`` layout whose splits have different classes.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    _check_arguments(root, validation_percent, test_percent, min_per_class)
    layout, dirs = _layout(root, validation_percent, test_percent)
    listing, ignored, folder_links = _gather(root, dirs)
    class_names = _class_names_of(root, layout, dirs, listing, folder_links)
    entries = _entries(root, listing, class_names, dirs, validation_percent, test_percent)
    entries, duplicates = _one_name_per_file(root, entries, class_names)
    bad_of, renamed, digests = _check_files(entries)
    usable = _usable(root, entries, bad_of, class_names)
    result = FolderScan(
        root=root,
        layout=layout,
        class_names=class_names,
        splits=_splits(usable, digests),
        bad=tuple(bad_of.values()),
        renamed=renamed,
        ignored=tuple(ignored),
        validation_percent=float(validation_percent),
        test_percent=float(test_percent),
        folder_links=tuple(folder_links),
        duplicates=duplicates,
    )
    _check_counts(result, min_per_class, has_validation_dir="validation" in dirs)
    return result


def _check_arguments(root, validation_percent, test_percent, min_per_class):
    if not os.path.isdir(root):
        raise DataError(
            f"image folder {shown(root)} " + ("is not a directory" if os.path.exists(root) else "does not exist")
        )
    for flag, value in (("--validation-percent", validation_percent), ("--test-percent", test_percent)):
        if not 0 <= value < 100:
            raise DataError(f"{flag} must be in [0, 100), got {value}")
    if min_per_class < 1:
        raise DataError(f"the minimum number of images per class must be at least 1, got {min_per_class}")


def _layout(root, validation_percent, test_percent):
    """Returns the layout ("subfolders" or "hash") and {split dir key: folder} to list."""
    top = _class_dirs(root)
    if "train" not in top or "test" not in top:
        if test_percent + validation_percent >= 100:
            raise DataError(
                f"--validation-percent {validation_percent} and --test-percent {test_percent} leave nothing to train on"
            )
        return "hash", {"all": root}
    val_dirs = [d for d in VALIDATION_DIR_NAMES if d in top]
    if len(val_dirs) > 1:
        raise DataError(f"image folder {shown(root)} has both val/ and validation/: keep one")
    extra = sorted(set(top) - {"train", "test", *val_dirs})
    if extra:
        raise DataError(
            f"image folder {shown(root)} has train/ and test/, and also {', '.join(shown(d) + '/' for d in extra)}: "
            "with train/ and test/, only val/ or validation/ may sit beside them"
        )
    dirs = {"train": os.path.join(root, "train"), "test": os.path.join(root, "test")}
    if val_dirs:
        dirs["validation"] = os.path.join(root, val_dirs[0])
    return "subfolders", dirs


def class_name_problem(name):
    """Why a folder name cannot be a class name, or None when it can.

    A class name is written to labels.txt, one per line in UTF-8, and must read back the
    same: bytes that are not UTF-8, a line break or another control character, or a name
    that is only blanks (a reader skips blank lines) cannot.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    odd = next((c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if odd is not None:
        return f"its name holds the control character {odd.encode('unicode_escape').decode('ascii')}"
    if not name.strip():
        return "its name is blank"
    return None


def _class_names_of(root, layout, dirs, listing, folder_links):
    """Returns the sorted class names; with train/ and test/, every split folder must hold the same."""
    for key, per_class in listing.items():
        for name in per_class:
            problem = class_name_problem(name)
            if problem is not None:
                raise DataError(
                    f"image folder {shown(root)}: the class folder {shown(os.path.join(dirs[key], name))} "
                    f"cannot name a class ({problem}; labels.txt holds one UTF-8 name per line): rename it"
                )
    class_names = tuple(sorted(listing["train" if layout == "subfolders" else "all"]))
    if layout == "subfolders":
        for key, per_class in listing.items():
            if set(per_class) != set(class_names):
                missing = sorted(set(class_names) - set(per_class))
                unknown = sorted(set(per_class) - set(class_names))
                detail = "; ".join(
                    filter(
                        None,
                        [
                            missing and f"lacks {', '.join(missing)}",
                            unknown and f"has classes train/ lacks: {', '.join(unknown)}",
                        ],
                    )
                )
                raise DataError(
                    f"image folder {shown(root)}: {os.path.basename(dirs[key])}/ {detail}; "
                    f"train/ has {', '.join(class_names)}"
                )
    if len(class_names) < 2:
        found = f"only {class_names[0]!r}" if class_names else "none"
        # Class folders that are links were skipped: say so, or "found none" would be a riddle.
        top = [link for link in folder_links if os.path.dirname(link) in {root, *dirs.values()}]
        skipped = f" ({len(top)} links to folders not followed: {', '.join(map(_link_shown, top[:3]))})" if top else ""
        raise DataError(f"image folder {shown(root)} needs at least 2 class subfolders, found {found}{skipped}")
    return class_names


def _entries(root, listing, class_names, dirs, validation_percent, test_percent):
    """Returns every image file as (split, label, path), in a fixed order (split folder, class, relative path)."""
    entries = []
    for key, per_class in listing.items():
        for label, name in enumerate(class_names):
            for rel, path in per_class[name]:
                if key == "all":
                    split = split_of(rel, validation_percent, test_percent)
                elif key == "train" and "validation" not in dirs:
                    split = split_of(rel, validation_percent, 0.0)
                else:
                    split = key
                entries.append((split, label, path))
    if not entries:
        raise DataError(
            f"image folder {shown(root)} holds no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders"
        )
    return entries


def _one_name_per_file(root, entries, class_names):
    """Keeps each file once: its first name in listing order; a later name in the same class is a duplicate.

    A file is known by its device and inode, so links and hard links to it are other names.
    Names that lead to nothing (broken links) are kept, to be reported as bad files.

    Returns:
      (entries kept, tuple of :class:`BadFile` of the names dropped).

    Raises:
      DataError: one file under two classes, naming both.
    """
    first_of, kept, duplicates = {}, [], []
    for entry in entries:
        _, label, path = entry
        try:
            info = os.stat(path)
        except OSError:
            kept.append(entry)
            continue
        key = (info.st_dev, info.st_ino)
        if key not in first_of:
            first_of[key] = entry
            kept.append(entry)
            continue
        _, first_label, first_path = first_of[key]
        if first_label != label:
            raise DataError(
                f"image folder {shown(root)}: {shown(_below(first_path, root))} (class {class_names[first_label]!r}) "
                f"and {shown(_below(path, root))} (class {class_names[label]!r}) are the same file (a link or a hard "
                "link): an image cannot belong to two classes; remove one of them"
            )
        duplicates.append(BadFile(path, f"the same file as {shown(_below(first_path, root))}, used once"))
    return kept, tuple(duplicates)


def _below(path, root):
    return path[len(root) :].lstrip(os.sep)


def _sha256_of(path):
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _check_files(entries):
    """Prechecks, reads and decodes every file once.

    Files are prechecked by their first bytes; the ones that pass are read whole for their
    sha256, then decoded by :func:`_find_bad`.

    Returns:
      ({entry index: BadFile} of the files that cannot be used, in index order; the renamed
      files; {path: sha256} of the files read).
    """
    reasons, renamed, digests = {}, [], {}
    for i, (_, _, path) in enumerate(entries):
        reason, content = _precheck(path)
        if reason is None:
            try:
                digests[path] = _sha256_of(path)
            except OSError as e:
                reason = f"cannot read: {one_line(e)}"
        if reason is not None:
            reasons[i] = reason
        elif content != _FORMAT_OF_EXTENSION[os.path.splitext(path)[1].lower()]:
            renamed.append(BadFile(path, f"its content is {content}, its extension {os.path.splitext(path)[1]}"))
    candidates = [i for i in range(len(entries)) if i not in reasons]
    for j, reason in _find_bad([entries[i][2] for i in candidates]).items():
        reasons[candidates[j]] = reason
    bad_of = {i: BadFile(entries[i][2], reasons[i]) for i in sorted(reasons)}
    bad_paths = {b.path for b in bad_of.values()}
    return bad_of, tuple(r for r in renamed if r.path not in bad_paths), digests


def _usable(root, entries, bad_of, class_names):
    """Returns the entries that decode.

    Raises:
      DataError: no file decodes, or every file of a class is bad.
    """
    if len(bad_of) == len(entries):
        first = next(iter(bad_of.values()))
        raise DataError(
            f"image folder {shown(root)}: none of its {len(entries)} image files can be decoded "
            f"(first: {shown(first.path)}: {first.reason})"
        )
    usable = [e for i, e in enumerate(entries) if i not in bad_of]
    for label, name in enumerate(class_names):
        total = sum(1 for e in entries if e[1] == label)
        if total and not any(e[1] == label for e in usable):
            first = next(b for i, b in bad_of.items() if entries[i][1] == label)
            raise DataError(
                f"image folder {shown(root)}: every one of the {total} image files of class {name!r} "
                f"is bad (first: {shown(first.path)}: {first.reason})"
            )
    return usable


def _splits(usable, digests):
    splits = {}
    for split in SPLITS:
        chosen = [(label, path) for s, label, path in usable if s == split]
        splits[split] = Split(
            tuple(p for _, p in chosen),
            np.array([label for label, _ in chosen], np.int64),
            tuple(digests[p] for _, p in chosen),
        )
    return splits


def _check_counts(result, min_per_class, has_validation_dir):
    """Every class has at least min_per_class training images and one image in each split that should have some."""
    expected = {
        "train": min_per_class,
        "validation": 1 if (result.validation_percent > 0 or has_validation_dir) else 0,
        "test": 1 if (result.layout == "subfolders" or result.test_percent > 0) else 0,
    }
    for name, per_split in result.counts().items():
        for split, need in expected.items():
            if per_split[split] < need:
                counts = ", ".join(f"{s} {per_split[s]}" for s in SPLITS)
                hint = "add images to it" + (
                    "" if result.layout == "subfolders" or split == "train" else f" or lower --{split}-percent"
                )
                skipped = (
                    f" (skipped as unreadable: {len(result.bad)} of its files, first "
                    f"{shown(result.bad[0].path)}: {result.bad[0].reason})"
                    if result.bad
                    else ""
                )
                raise DataError(
                    f"image folder {shown(result.root)}: class {name!r} has {per_split[split]} usable images in "
                    f"{split} ({counts}), needs at least {need}: {hint}{skipped}"
                )
