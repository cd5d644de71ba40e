"""The image-folder rules as properties over generated folders: links, names, identity.

Each generated folder has a seeded random set of class folders and files whose names come
from a nasty alphabet (spaces, tabs, newlines, bytes that are not UTF-8, glob characters,
non-ASCII, leading dots), tiny PNGs, and links of every kind: a second name for a file of
the same class, a link to another class's file, a link to a file outside, a dangling link,
folder links to another class, to the folder itself and to its parent (cycles), and a class
folder that is a link. The expected outcome is worked out from what was generated, not from
the code under test:

- the rule for links (data.image_folder's docstring): links to files are followed, links to
  folders never are (listed, and warned about); a file is used once; one file in two classes
  refuses the scan with one line naming both;
- the rule for names: a class name that cannot read back from labels.txt (not UTF-8, a
  control character, blank) refuses the scan with one line naming the folder; any file name
  works; the class names read back from labels.txt and config.json byte for byte;
- predict.py's walk lists, class folder by class folder, the same files as the scan;
- identity: rewriting one file in place (same name, size and mtime) makes a resume refuse,
  naming that file; touching the mtimes alone does not.

The scans run in-process; decoding (tf.data, tested in test_image_folder.py and by the two
end-to-end runs at the bottom) is replaced by "every PNG decodes", which they all do.
"""

import glob
import io
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import invoke
from PIL import Image

import predict
import train_transfer
from data import image_folder as imf
from runtime import rundir
from runtime.errors import UserError
from runtime.paths import shown
from transfer import export

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITUATIONS = 150
# Pieces of names: each is fine in a file name on Linux; some cannot be a class name.
FILE_PIECES = [b"a", b"Z", b"7", b" ", b"\t", b"\n", b"\r", b"\x1b", b"[", b"]", b"*", b"?", b"-", b".", b"\xff"]
FILE_PIECES += ["é".encode(), "日本".encode(), "\u202e".encode()]
GOOD_CLASS_PIECES = [b"a", b"b", b"Q", b"3", b" ", b"[", b"]", b"*", b"?", b"-", "é".encode(), "日".encode()]
BAD_CLASS_PIECES = [b"\n", b"\t", b"\r", b"\x1b", b"\xff", b"\xc3"]


def png(seed):
    """A 4x4 grey PNG, stored without compression so that every one has the same size."""
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 4), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=0)
    return out.getvalue()


def _name(rng, pieces, low=1, high=5):
    return b"".join(rng.choice(pieces) for _ in range(rng.randint(low, high)))


class Folder:
    """A generated image folder and what the rules say of it."""

    def __init__(self, base, seed):
        rng = random.Random(seed)
        self.root = os.path.join(os.fsencode(base), b"data")
        outside = os.path.join(os.fsencode(base), b"outside")
        os.makedirs(outside)
        self.good, self.bad_classes = [], []
        self.files = {}  # class name (bytes) -> set of real paths its listing must give
        self.cross = []  # (link relative to root, its target) of links to another class's file
        self.names_of = {}  # path of a file -> its names relative to root, when it has several
        self.folder_links, self.seconds = set(), 0
        names = set()
        while len(names) < rng.randint(2, 4):
            names.add(b"c" + _name(rng, GOOD_CLASS_PIECES, 0, 4))
        self.good = sorted(names)
        if rng.random() < 0.2:
            bad = (
                _name(rng, GOOD_CLASS_PIECES, 0, 2) + rng.choice(BAD_CLASS_PIECES) + _name(rng, GOOD_CLASS_PIECES, 0, 2)
            )
            self.bad_classes.append(bad if rng.random() < 0.9 else b"  ")
        if rng.random() < 0.1:  # only one class left: too few
            self.good = self.good[:1]
        real = {}
        counter = 0
        for name in self.good + self.bad_classes:
            folder = os.path.join(self.root, name)
            os.makedirs(folder)
            real[name] = []
            taken = set()
            places = [folder]
            if rng.random() < 0.4:
                sub = b"s" + _name(rng, FILE_PIECES, 0, 3)
                places.append(os.path.join(folder, sub))
                os.makedirs(places[-1])
            for place in places:
                for _ in range(rng.randint(1, 3)):
                    stem = _name(rng, FILE_PIECES)
                    filename = stem + rng.choice([b".png", b".png", b".PNG"])
                    if filename in taken or b"/" in filename:
                        continue
                    taken.add(filename)
                    counter += 1
                    path = os.path.join(place, filename)
                    with open(path, "wb") as stream:
                        stream.write(png(seed * 1000 + counter))
                    if not filename.startswith(b".") and not os.path.basename(place).startswith(b"."):
                        real[name].append(path)
            if not real[name]:  # every class keeps one visible image
                path = os.path.join(folder, b"plain.png")
                with open(path, "wb") as stream:
                    stream.write(png(seed * 1000 + 999))
                real[name].append(path)
            with open(os.path.join(folder, b"notes.txt"), "wb") as stream:
                stream.write(b"not an image")
        for name in self.good:
            self.files[name] = {os.path.realpath(p) for p in real[name]}
        for index, name in enumerate(self.good):
            folder = os.path.join(self.root, name)
            others = [n for n in self.good if n != name]
            if rng.random() < 0.3:  # a second name for a file of its own class
                target = rng.choice(real[name])
                link = os.path.join(folder, b"again" + _name(rng, FILE_PIECES, 0, 2) + b".png")
                os.symlink(os.path.relpath(target, folder), link)
                names = self.names_of.setdefault(target, [os.path.relpath(target, self.root)])
                names.append(os.path.relpath(link, self.root))
                self.seconds += 1
            if rng.random() < 0.3:  # a file from outside
                target = os.path.join(outside, b"o%d.png" % index)
                with open(target, "wb") as stream:
                    stream.write(png(seed * 1000 + 500 + index))
                os.symlink(target, os.path.join(folder, b"from outside.png"))
                self.files[name].add(os.path.realpath(target))
            if rng.random() < 0.2:
                os.symlink(b"nowhere.png", os.path.join(folder, b"dangling.png"))
                self.files[name].add(os.path.realpath(os.path.join(folder, b"dangling.png")))
            if others and rng.random() < 0.05:  # another class's file
                target = rng.choice(real[rng.choice(others)])
                link = os.path.join(folder, b"theirs.png")
                os.symlink(target, link)
                self.cross.append((os.path.relpath(link, self.root), target))
            for kind in ("other class", "itself", "parent", "root"):
                if rng.random() < 0.15:
                    target = {
                        "other class": os.path.join(b"..", rng.choice(others or [name])),
                        "itself": b".",
                        "parent": b"..",
                        "root": self.root,
                    }[kind]
                    link = os.path.join(folder, kind.encode() + b" link")
                    os.symlink(target, link)
                    self.folder_links.add(link)
        if rng.random() < 0.2:  # a class folder that is a link
            link = os.path.join(self.root, b"linked class")
            os.symlink(rng.choice([os.path.join(self.root, self.good[0]), outside]), link)
            self.folder_links.add(link)
        if rng.random() < 0.2:
            os.makedirs(os.path.join(self.root, b".hidden class"))
            with open(os.path.join(self.root, b".hidden class", b"x.png"), "wb") as stream:
                stream.write(png(seed))

    def expected_refusal(self):
        """What the one line must name, or None when the scan must succeed."""
        if self.bad_classes:
            return [shown(os.path.join(self.root, name)) for name in self.bad_classes]
        if len(self.good) < 2:
            return ["needs at least 2 class subfolders"]
        if self.cross:  # the link and the target's first name (a second name may come first)
            return [
                (shown(link), shown(other))
                for link, target in self.cross
                for other in self.names_of.get(target, [os.path.relpath(target, self.root)])
            ]
        return None


@pytest.fixture
def decodes_all(monkeypatch):
    monkeypatch.setattr(imf.scanning, "_find_bad", lambda paths: {})  # what the scan calls


def _scan(folder):
    return imf.scan(os.fsdecode(folder.root), validation_percent=0, test_percent=0)


def _outcome(folder):
    try:
        return _scan(folder), None
    except UserError as error:
        return None, str(error)


def _real_paths(paths):
    return {os.path.realpath(os.fsencode(path)) for path in paths}


def test_predict_keeps_the_image_extensions_of_the_scan():
    # predict.py stands alone beside an export, so it keeps its own copy of the list that
    # data.image_folder holds for training and look; the two must not drift apart.
    assert predict.IMAGE_EXTENSIONS == imf.IMAGE_EXTENSIONS
    assert ".webp" in imf.IMAGE_EXTENSIONS


def test_links_and_names_follow_one_rule_in_the_scan_labels_and_predict(tmp_path, decodes_all):
    tried = dict.fromkeys(["scanned", "folder links", "second names", "odd file names"], 0)
    tried.update(dict.fromkeys(["refused: class name", "refused: one class", "refused: two classes"], 0))
    for seed in range(SITUATIONS):
        folder = Folder(tmp_path / str(seed), seed)
        scan, error = _outcome(folder)
        expected = folder.expected_refusal()
        if expected is not None:
            assert error is not None and "\n" not in error, (seed, error)
            assert any(
                (part in error) if isinstance(part, str) else all(p in error for p in part) for part in expected
            ), (seed, error, expected)
            kind = "class name" if folder.bad_classes else "one class" if len(folder.good) < 2 else "two classes"
            tried[f"refused: {kind}"] += 1
            continue
        assert error is None, (seed, error)
        tried["scanned"] += 1
        # Each file once, in its own class; dangling links are the bad files.
        assert [os.fsencode(n) for n in scan.class_names] == folder.good
        used = list(scan.splits["train"].files) + [bad.path for bad in scan.bad]
        assert len(_real_paths(used)) == len(used), seed
        for label, name in enumerate(folder.good):
            mine = [p for p, y in zip(scan.splits["train"].files, scan.splits["train"].labels) if y == label]
            bad = [b.path for b in scan.bad if os.fsencode(b.path).startswith(os.path.join(folder.root, name) + b"/")]
            assert _real_paths(mine + bad) == folder.files[name], (seed, name)
            # predict.py's walk of the class folder: the same files.
            listed, links = predict.expand_paths([os.fsdecode(os.path.join(folder.root, name))])
            assert _real_paths(listed) == folder.files[name], (seed, name)
            assert {os.fsencode(link) for link in links} <= folder.folder_links
            # and its "**" glob (which ended only after 2^40 paths on a folder with two cycles)
            pattern = glob.escape(os.fsdecode(os.path.join(folder.root, name))) + "/**/*.png"
            try:
                globbed = predict.expand_paths([pattern])[0]
            except predict.PredictError:  # only .PNG names
                globbed = []
            assert set(globbed) == {p for p in listed if p.endswith(".png") and os.path.isfile(p)}, (seed, name)
        assert {os.fsencode(link) for link in scan.folder_links} == folder.folder_links, seed
        assert len(scan.duplicates) == folder.seconds, seed
        assert all(line.isprintable() for line in scan.report_lines()), seed
        if folder.folder_links:
            assert any(line.startswith("warning: skipped") for line in scan.report_lines())
            tried["folder links"] += 1
        tried["second names"] += bool(folder.seconds)
        tried["odd file names"] += any(not p.isprintable() for p in scan.splits["train"].files)
        # labels.txt (as transfer.train writes it, as transfer.export reads it) and config.json: byte for byte.
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "labels.txt").write_text("".join(f"{n}\n" for n in scan.class_names), encoding="utf-8")
        assert export.class_names_of(str(run), {}, scan.num_classes) == list(scan.class_names)
        rundir.write_json(
            str(run / "config.json"), {"class_names": list(scan.class_names), "data_sha256": scan.file_digests()}
        )
        back = rundir.read_json(str(run / "config.json"))
        assert [os.fsencode(n) for n in back["class_names"]] == folder.good
        assert back["data_sha256"] == scan.file_digests()
        assert {os.path.join(folder.root, os.fsencode(rel)) for rel in back["data_sha256"]} == {
            os.fsencode(p) for p in scan.splits["train"].files
        }
    assert sum(count for kind, count in tried.items() if kind.startswith(("scanned", "refused"))) == SITUATIONS
    print(tried)
    # The generator reaches every kind of situation (pinned for this seed range).
    assert tried == {
        "scanned": 90,
        "folder links": 69,
        "second names": 51,
        "odd file names": 90,
        "refused: class name": 26,
        "refused: one class": 13,
        "refused: two classes": 21,
    }


IDENTITY_SITUATIONS = 60
RESUME_KEYS = ("data_source", "data_identity", "data_sha256")


def _fake_run(model_dir, scan):
    """A model dir as a finished run on this scan leaves it, as far as the resume check looks."""
    os.makedirs(model_dir)
    config = {"model": "transfer", "data_source": "image-folder"}
    config.update(data_identity=scan.identity(), data_sha256=scan.file_digests())
    rundir.write_config(model_dir, config)
    open(os.path.join(model_dir, "model.ckpt-1.index"), "wb").close()
    return config


def _resume(model_dir, scan):
    config = {"model": "transfer", "data_source": "image-folder"}
    config.update(data_identity=scan.identity(), data_sha256=scan.file_digests())
    return rundir.check_resume(model_dir, config, RESUME_KEYS)


def test_a_file_rewritten_in_place_refuses_the_resume_naming_it_and_a_touch_does_not(tmp_path, decodes_all):
    tried = 0
    for seed in range(IDENTITY_SITUATIONS):
        rng = random.Random(seed)
        folder = None
        while folder is None or folder.expected_refusal() is not None:
            folder = Folder(tmp_path / f"{seed}-{rng.random()}", rng.randrange(10**6))
        model_dir = str(tmp_path / f"run{seed}")
        before = _scan(folder)
        _fake_run(model_dir, before)
        assert _resume(model_dir, before) is not None

        # Rewrite one used file: same name, same size, same times.
        path = rng.choice(before.splits["train"].files)
        info = os.stat(path)
        with open(path, "rb") as stream:
            original = stream.read()
        replacement = png(10**6 + seed)
        assert len(replacement) == len(original) and replacement != original
        with open(path, "wb") as stream:
            stream.write(replacement)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
        assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (info.st_size, info.st_mtime_ns)
        after = _scan(folder)
        assert after.identity() == before.identity()  # same files, same splits: only the contents differ
        with pytest.raises(UserError) as refused:
            _resume(model_dir, after)
        message = str(refused.value)
        assert "\n" not in message and f"data_sha256: {shown(before._relative(path))} changed" in message, message

        # The bytes back, every mtime moved: the same data, it resumes.
        with open(path, "wb") as stream:
            stream.write(original)
        for name in before.splits["train"].files:
            os.utime(name, (info.st_atime + 3600, info.st_mtime + 3600))
        assert _resume(model_dir, _scan(folder)) is not None
        tried += 1
    assert tried == IDENTITY_SITUATIONS


def test_added_and_removed_files_are_named_too(tmp_path, decodes_all):
    folder = Folder(tmp_path / "f", 3)
    assert folder.expected_refusal() is None
    model_dir = str(tmp_path / "run")
    before = _scan(folder)
    _fake_run(model_dir, before)
    added = os.path.join(folder.root, folder.good[0], b"0 new.png")
    with open(added, "wb") as stream:
        stream.write(png(77))
    with pytest.raises(UserError, match=r"data_sha256: .*0 new\.png is new"):
        _resume(model_dir, _scan(folder))
    os.remove(added)
    gone = before.splits["train"].files[0]
    os.rename(gone, gone + ".moved")
    with pytest.raises(UserError, match=r"data_sha256: " + re.escape(shown(before._relative(gone))) + " is gone"):
        _resume(model_dir, _scan(folder))


# --- concrete cases, decoded for real ---------------------------------------------------


def _odd_folder(root):
    """Two classes whose files have a byte that is not UTF-8, a newline, glob characters; returns the paths."""
    root = os.fsencode(root)
    paths = []
    for cls, names in (
        (b"ant", [b"a\xff.png", b"new\nline.png", b"[x]*?.png"]),
        (b"bee", [b"b\xfe\t.png", b"plain.png"]),
    ):
        os.makedirs(os.path.join(root, cls))
        for i, name in enumerate(names):
            paths.append(os.path.join(root, cls, name))
            with open(paths[-1], "wb") as stream:
                stream.write(png(i + len(cls) * 10))
    return paths


def test_odd_file_names_are_decoded_and_reported_on_one_printable_line(tmp_path):
    paths = _odd_folder(tmp_path)
    os.symlink(b"nowhere\xff.png", os.path.join(os.fsencode(tmp_path), b"ant", b"gone\n.png"))
    scan = imf.scan(tmp_path, validation_percent=0, test_percent=0)
    assert {os.fsencode(p) for p in scan.splits["train"].files} == set(paths)
    assert [b.reason for b in scan.bad] == ["broken symbolic link (to nowhere\\xff.png)"]
    lines = scan.report_lines()
    assert all(line.isprintable() for line in lines) and "  " + shown(scan.bad[0].path) + ": broken" in lines[2]
    pixels = imf.read_images(scan.splits["train"].files, imf.MNIST_INPUT)
    assert pixels.shape == (5, 28, 28, 1) and pixels.max() > 0


def test_a_class_folder_that_cannot_read_back_from_labels_txt_is_refused_by_name(tmp_path):
    for i, bad in enumerate([b"c\nd", b"c\xff", b"tab\there", b"  "]):
        root = tmp_path / str(i)
        _odd_folder(root)
        os.makedirs(os.path.join(os.fsencode(root), bad))
        with open(os.path.join(os.fsencode(root), bad, b"x.png"), "wb") as stream:
            stream.write(png(5))
        with pytest.raises(UserError) as refused:
            imf.scan(root, validation_percent=0, test_percent=0)
        message = str(refused.value)
        assert "\n" not in message and f"the class folder {shown(os.path.join(os.fsencode(root), bad))} " in message


def test_a_link_cycle_ends_and_is_named_in_one_warning(tmp_path):
    _odd_folder(tmp_path)
    os.symlink("..", tmp_path / "ant" / "up")
    os.symlink("../bee", tmp_path / "ant" / "their class")
    scan = imf.scan(tmp_path, validation_percent=0, test_percent=0)
    assert len(scan.splits["train"]) == 5
    warning = [line for line in scan.report_lines() if line.startswith("warning: skipped")]
    assert warning == [
        f"warning: skipped 2 links to folders, which are never followed: {tmp_path}/ant/their class (-> ../bee), "
        f"{tmp_path}/ant/up (-> ..)"
    ]


# --- end to end: a run on an image folder, a file rewritten, the resume refused -------------


def _split_folder(root):
    """train/, val/ and test/ with two classes of 4x4 PNGs; odd names included. Returns the train files."""
    root = os.fsencode(root)
    train = []
    for offset, (split, count) in enumerate(((b"train", 8), (b"val", 2), (b"test", 2))):
        for label, cls in enumerate((b"ant", b"bee")):
            os.makedirs(os.path.join(root, split, cls))
            for i in range(count):
                name = b"%d\xff %s.png" % (i, split) if i % 2 else b"%d.png" % i
                path = os.path.join(root, split, cls, name)
                with open(path, "wb") as stream:
                    stream.write(png(100 * offset + 10 * label + i))
                if split == b"train":
                    train.append(path)
    return train


def _rewrite_in_place(path, seed):
    info = os.stat(path)
    with open(path, "wb") as stream:
        stream.write(png(seed))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def _error_lines(text):
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_autoencoder_and_transfer_runs_refuse_to_resume_on_a_rewritten_file(tmp_path):
    data = tmp_path / "images"
    train = _split_folder(data)
    ae_dir = tmp_path / "ae"
    command = [sys.executable, os.path.join(REPO, "train_autoencoder.py"), "--data-dir", data, "--epochs", "1"]
    command += ["--batch-size", "8", "--summary-every", "0", "--model-dir", ae_dir]
    env = dict(os.environ, PYTHONPATH=REPO)
    first = subprocess.run(command, capture_output=True, env=env, check=False)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    config = json.loads((ae_dir / "config.json").read_text())
    assert {os.path.join(os.fsencode(data), os.fsencode(rel)) for rel in config["data_sha256"]} >= set(train)

    _rewrite_in_place(train[1], 4242)  # b"1\xff train.png" of class ant
    again = subprocess.run(command, capture_output=True, env=env, check=False)
    errors = _error_lines(again.stderr.decode("utf-8", "replace"))
    assert again.returncode == 2 and len(errors) == 1 and b"Traceback" not in again.stderr, again.stderr
    assert "data_sha256: train/ant/1\\xff train.png changed" in errors[0], errors

    # A transfer run from that autoencoder, in-process, on the folder as it now is.
    flags = ["--data-dir", data, "--checkpoint", ae_dir, "--restore", "conv", "--epochs", "1"]
    flags += ["--batch-size", "8", "--model-dir", tmp_path / "tl"]
    run = invoke(train_transfer.main, flags)
    assert run.code == 0, run.err
    _rewrite_in_place(train[-1], 4343)  # b"7\xff train.png" of class bee
    refused = invoke(train_transfer.main, flags)
    errors = _error_lines(refused.err)
    assert refused.code == 2 and len(errors) == 1, refused.err
    assert "data_sha256: train/bee/7\\xff train.png changed" in errors[0], errors


def test_class_folders_that_are_links_are_named_when_too_few_classes_remain(tmp_path):
    _odd_folder(tmp_path / "elsewhere")
    (tmp_path / "data").mkdir()
    for name in ("ant", "bee"):
        os.symlink(tmp_path / "elsewhere" / name, tmp_path / "data" / name)
    with pytest.raises(UserError) as refused:
        imf.scan(tmp_path / "data", validation_percent=0, test_percent=0)
    assert str(refused.value) == (
        f"image folder {tmp_path}/data needs at least 2 class subfolders, found none (2 links to folders not "
        f"followed: {tmp_path}/data/ant (-> {tmp_path}/elsewhere/ant), "
        f"{tmp_path}/data/bee (-> {tmp_path}/elsewhere/bee))"
    )
