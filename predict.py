"""Classify image files with an exported model: top-k classes and probabilities per image.

    python predict.py digit.png photos/ "scans/*.jpg"
    python predict.py img.png --model exported --top-k 3 --json

PATH may be a file, a folder (its image files, recursively; names starting with "."
skipped) or a glob. Below a PATH, links to files are followed and links to folders never
are (each is named in a warning), as in training's scan of an image folder
(data/image_folder/scanning.py), so a link cycle cannot hang a walk or a "**" glob. --model is a
directory written by `python -m transfer.export` (default: exported). The images are
decoded and preprocessed inside the model (its predict_encoded signature), exactly as the
exported card says.

Of the toolkit this script imports two modules made of the standard library only, the
pixel bound (data/image_header.py) and the silencer of file descriptor 2
(runtime/native_stderr.py), on the lines marked "inlined in an export": the predict.py
that `python -m transfer.export` writes into every export holds their source in place
of those lines (transfer/standalone.py), so it needs TensorFlow and the standard library
only and runs wherever the export is copied. A file that cannot be read or decoded is
reported on stderr as one line, `error: PATH: reason`, the others are still classified,
and the exit status is then 2. Only regular files are opened (a FIFO named x.png would
block for ever), and an image whose header declares more than 8192 x 8192 pixels is
refused before it is decoded, by the same rule as in training and look. The arguments,
the model folder and its labels.txt are checked before TensorFlow is imported, and
TensorFlow's start-up lines are kept off the terminal unless TF_CPP_MIN_LOG_LEVEL is set
to 0 or 1.
"""

import argparse
import contextlib
import fnmatch
import glob
import io
import json
import os
import subprocess
import sys
import tempfile

from data.image_header import NotARegularFile, open_regular, refusal  # inlined in an export
from runtime.native_stderr import native_stderr_silenced  # inlined in an export

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SIGNATURE = "predict_encoded"
# Where the toolkit lives when predict.py is run from its checkout: the exporter for a run dir.
EXPORTER_ROOT = os.path.dirname(os.path.abspath(__file__))
BATCH = 32


class PredictError(Exception):
    """A mistake in the command line or the model directory: one line, exit 2."""


def _stderr_to_devnull():
    """Hides what TensorFlow's C++ side and the JPEG library print straight to file descriptor 2.

    Unless TF_CPP_MIN_LOG_LEVEL is 0 or 1: then the user asked to see them.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        return contextlib.nullcontext()
    return native_stderr_silenced()


def _first_line(error):
    """The cause of a TensorFlow error, as one line (its message lists ops and frames first)."""
    text = getattr(error, "message", None) or str(error)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    framing = ("Graph execution error", "Detected at node", "Node:", "File ", "Original stack trace", "[[")
    useful = [line for line in lines if not line.startswith(framing)]
    text = useful[-1] if useful else (lines[0] if lines else type(error).__name__)
    return text.split(" [Op:")[0][:300]


def shown(path):
    """A path as one printable line: bytes that are not UTF-8 and unprintable characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _folders_and_files(directory, hidden=False):
    """Sorted entries of a directory (hidden ones too if asked): (folders to enter, other paths, links to folders)."""
    folders, files, links = [], [], []
    try:
        entries = sorted((e for e in os.scandir(directory or os.curdir) if hidden or e.name[:1] != "."), key=_name)
    except OSError:
        return folders, files, links
    for entry in entries:
        path = os.path.join(directory, entry.name)
        if entry.is_dir(follow_symlinks=False):
            folders.append(path)
        elif entry.is_symlink() and entry.is_dir():
            links.append(path)
        else:
            files.append(path)
    return folders, files, links


def _name(entry):
    return entry.name


def _walk(top, folder_links):
    """Every visible path below top, depth first in name order, never entering a link to a folder.

    Returns (folders, files); the links to folders met are added to folder_links.
    """
    all_folders, all_files, stack = [], [], [top]
    while stack:
        folders, files, links = _folders_and_files(stack.pop())
        all_folders += folders
        all_files += files
        folder_links += links
        stack += reversed(folders)
    return all_folders, all_files


def _glob(pattern, folder_links):
    """glob.glob(pattern, recursive=True) by the link rule: a wildcard never enters a link to a folder.

    As in glob, a wildcard matches no name starting with "." unless it starts with one.
    """
    bases = [os.sep] if pattern.startswith(os.sep) else [""]
    parts = [part for part in pattern.split(os.sep) if part]
    for i, part in enumerate(parts):
        last, found = i == len(parts) - 1, []
        for base in bases:
            if not glob.has_magic(part):
                found.append(os.path.join(base, part))
            elif part == "**":
                folders, files = _walk(base, folder_links)
                found += [base, *folders, *(files if last else [])]
            else:
                folders, files, links = _folders_and_files(base, hidden=part.startswith("."))
                names = folders + (files + links if last else [])
                found += [p for p in names if fnmatch.fnmatchcase(os.path.basename(p), part)]
                folder_links += [] if last else [p for p in links if fnmatch.fnmatchcase(os.path.basename(p), part)]
        bases = found
    return sorted(p for p in bases if os.path.isfile(p))


def expand_paths(patterns):
    """Files, folders and globs to a sorted, duplicate-free list of files.

    Returns:
      (the files, the links to folders met and not followed).

    Raises:
      PredictError: a path that is neither a file, a folder nor a glob matching something.
    """
    files, folder_links = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            files += [p for p in _walk(pattern, folder_links)[1] if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS]
        elif os.path.lexists(pattern):
            files.append(pattern)
        elif glob.has_magic(pattern):
            matches = _glob(pattern, folder_links)
            if not matches:
                raise PredictError(f"{shown(pattern)} matches no file")
            files += matches
        else:
            raise PredictError(f"{shown(pattern)} does not exist")
    seen = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    if not unique:
        raise PredictError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(shown, patterns))}")
    return unique, folder_links


def check_model_dir(model_dir):
    """Tells an export from a training run without TensorFlow: True for a run (config.json, no SavedModel).

    Raises:
      PredictError: a missing folder, or one that is neither an export nor a run.
    """
    if not os.path.isdir(model_dir):
        raise PredictError(
            f"--model {shown(model_dir)} does not exist; export a run with python -m transfer.export --model-dir RUN "
            f"--output {shown(model_dir)}"
        )
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        return False
    if os.path.exists(os.path.join(model_dir, "config.json")):
        return True
    raise PredictError(f"--model {shown(model_dir)} holds no saved_model.pb: not an exported model")


def read_labels(model_dir):
    """The class names of an export's labels.txt (one a line, UTF-8), or None without one.

    Raises:
      PredictError: a labels.txt that cannot be read or is not UTF-8 (naming its line).
    """
    path = os.path.join(model_dir, "labels.txt")
    if not os.path.lexists(path):
        return None
    try:
        with open_regular(path) as stream:
            data = stream.read()
    except OSError as error:
        raise PredictError(f"cannot read {shown(path)}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise PredictError(
            f"{shown(path)}: line {line} is not UTF-8 (byte 0x{data[error.start]:02x}); it holds one class name a line"
        ) from None
    return [line.rstrip("\n") for line in io.StringIO(text, newline=None) if line.strip()]


def load_model(model_dir):
    """Loads an export (checked by check_model_dir); returns (the loaded model, its predict_encoded function).

    Raises:
      PredictError: a damaged SavedModel, or one without the signature.
    """
    import tensorflow as tf

    try:
        where = model_dir
        if not model_dir.isascii() and os.fsencode(model_dir) != model_dir.encode("utf-8", "replace"):
            # TensorFlow takes UTF-8 names only: a folder named otherwise is reached by its descriptor.
            where = f"/proc/self/fd/{os.open(model_dir, os.O_RDONLY | os.O_DIRECTORY)}"
        with _stderr_to_devnull():
            loaded = tf.saved_model.load(where)
    except (OSError, ValueError, RuntimeError, KeyError, tf.errors.OpError) as error:
        # A damaged saved_model.pb is an OSError, missing variables an OpError: both mean "damaged".
        raise PredictError(f"cannot load the model in {shown(model_dir)}: {_first_line(error)}") from None
    if SIGNATURE not in loaded.signatures:
        raise PredictError(
            f"the model in {shown(model_dir)} has no {SIGNATURE} signature "
            f"(it has {', '.join(loaded.signatures) or 'none'})"
        )
    return loaded, loaded.signatures[SIGNATURE]


def _from_anywhere(network):
    """--network as the exporter, run in another folder, reads it: a FILE.py:ATTRIBUTE made absolute."""
    where, colon, attribute = network.rpartition(":")
    if colon and (where.endswith(".py") or os.sep in where):
        return f"{os.path.abspath(os.path.expanduser(where))}:{attribute}"
    return network


def export_on_the_fly(run_dir, scratch, network=None):
    """Exports a training run into ``scratch`` by running the exporter in a child process.

    The exporter is the toolkit's (python -m transfer.export); it runs in its own process,
    so this one still imports no training code. It needs the toolkit beside predict.py.

    Returns:
      The export directory.

    Raises:
      PredictError: the toolkit is not there, or the export fails (its error line is kept).
    """
    if not os.path.exists(os.path.join(EXPORTER_ROOT, "transfer", "export.py")):
        raise PredictError(
            f"{shown(run_dir)} is a training run, not an export, and the exporter is not beside predict.py; "
            f"export it first: python -m transfer.export --model-dir {shown(run_dir)} --output EXPORT_DIR"
        )
    output = os.path.join(scratch, "export")
    # The exporter runs in the toolkit's folder: a module path of --network is found from here too.
    path = [EXPORTER_ROOT, os.environ.get("PYTHONPATH"), os.getcwd()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    done = subprocess.run(
        [sys.executable, "-m", "transfer.export", "--model-dir", os.path.abspath(run_dir), "--output", output]
        + (["--network", _from_anywhere(network)] if network else []),
        cwd=EXPORTER_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        reason = errors[-1][len("error: ") :] if errors else f"the exporter exited with status {done.returncode}"
        raise PredictError(f"cannot export the run {run_dir}: {reason}")
    return output


def _classify(function, contents):
    import tensorflow as tf

    with _stderr_to_devnull():
        return function(encoded=tf.constant(contents, tf.string))["probabilities"].numpy()


def predict(files, function, top_k, names):
    """Yields (path, [(class id, name, probability)] or None, error or None) per file, in order."""
    import tensorflow as tf

    for start in range(0, len(files), BATCH):
        chunk, contents, results = files[start : start + BATCH], [], {}
        for path in chunk:
            contents.append(None)
            try:
                with open_regular(path) as stream:
                    data = stream.read()
            except NotARegularFile as error:
                results[path] = str(error)
                continue
            except OSError as error:
                results[path] = f"cannot read: {error.strerror or error}"
                continue
            results[path] = refusal(data)  # the pixel bound, before the model decodes a byte
            if results[path] is None:
                contents[-1] = data
        readable = [(p, c) for p, c in zip(chunk, contents) if c is not None]
        try:
            rows = list(_classify(function, [c for _, c in readable])) if readable else []
        except tf.errors.OpError:
            # Some file in the batch does not decode: classify one by one to tell which.
            rows = []
            for path, data in readable:
                try:
                    rows.append(_classify(function, [data])[0])
                except tf.errors.OpError as error:
                    rows.append(None)
                    results[path] = f"cannot decode: {_first_line(error)}"
        for (path, _), row in zip(readable, rows):
            if row is not None:
                order = sorted(range(len(row)), key=lambda i: -row[i])[:top_k]
                results[path] = [(i, names[i] if names else str(i), float(row[i])) for i in order]
        for path in chunk:
            outcome = results[path]
            yield (path, None, outcome) if isinstance(outcome, str) else (path, outcome, None)


class _Parser(argparse.ArgumentParser):
    """Errors in one line, `error: <what> (see <prog> --help)`, exit status 2, as the toolkit's commands."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _default_model():
    """The export this script sits in (the predict.py every export holds), else the folder `exported`."""
    here = os.path.dirname(os.path.abspath(__file__))
    return here if os.path.exists(os.path.join(here, "saved_model.pb")) else "exported"


def parse_args(argv=None):
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    parser.add_argument(
        "--model",
        "--model-dir",
        default=_default_model(),
        help="an export from python -m transfer.export (default: the export this script is in, else exported)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="instead of --model: a checkpoint dir, such as an ImageNet network converted by transfer.convert, "
        "exported on the fly (needs the toolkit beside predict.py)",
    )
    parser.add_argument(
        "--network",
        default=None,
        help="with --checkpoint: the registry network it holds (default: what the dir records), or a network "
        "you wrote, FILE.py:ATTRIBUTE or PACKAGE.MODULE:ATTRIBUTE (the exporter RUNS THAT FILE'S CODE; see "
        "python -m transfer.export --help)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="classes shown per image (default: 3, or all when the model has fewer)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The stack holds the scratch dir of an export made on the fly, removed on the way out.
    try:
        with contextlib.ExitStack() as stack:
            return _run(args, stack)
    except KeyboardInterrupt:  # Ctrl-C: one line, as a shell expects the status (predict writes nothing)
        print("interrupted by SIGINT", file=sys.stderr)
        return 130


def _run(args, stack):
    try:
        files = _files_to_classify(args)
        function, names, top_k = _model_to_use(args, stack)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _report(predict(files, function, top_k, names), args.json)


def _files_to_classify(args):
    """Checks every argument before TensorFlow is imported (5-10 s and its log lines); returns the files.

    Raises:
      PredictError: a bad --top-k, --network without --checkpoint, or a path that names no file.
    """
    if args.top_k is not None and args.top_k < 1:
        raise PredictError(f"--top-k must be at least 1, got {args.top_k}")
    if args.network and not args.checkpoint:
        raise PredictError("--network goes with --checkpoint DIR (an export knows its network)")
    if args.checkpoint and not os.path.isdir(args.checkpoint):
        raise PredictError(f"--checkpoint {args.checkpoint} is not a directory")
    files, folder_links = expand_paths(args.paths)
    if folder_links:
        listed = ", ".join(f"{shown(link)} (-> {shown(os.readlink(link))})" for link in folder_links[:3])
        more = ", ..." if len(folder_links) > 3 else ""
        print(
            f"warning: skipped {len(folder_links)} links to folders, which are never followed: {listed}{more}",
            file=sys.stderr,
        )
    return files


def _model_to_use(args, stack):
    """The export's predict_encoded function, its class names (or None) and the top-k to show.

    A training run or a --checkpoint dir is exported on the fly into a scratch dir that the
    stack removes on the way out.

    Raises:
      PredictError: see check_model_dir, read_labels, export_on_the_fly and load_model; a
        --top-k over the model's classes, or a labels.txt of another length.
    """
    model_dir = args.checkpoint or args.model
    on_the_fly = bool(args.checkpoint) or check_model_dir(model_dir)
    names = None if on_the_fly else read_labels(model_dir)
    with _stderr_to_devnull():
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    if on_the_fly:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="predict-export-"))
        model_dir = export_on_the_fly(model_dir, scratch, args.network)
        what = f"the checkpoint {args.checkpoint}" if args.checkpoint else f"the run {args.model}"
        print(f"exported {what} on the fly (python -m transfer.export keeps one)", file=sys.stderr)
        names = read_labels(model_dir)
    _, function = load_model(model_dir)
    num_classes = int(function.structured_outputs["probabilities"].shape[-1])
    top_k = min(3, num_classes) if args.top_k is None else args.top_k
    if top_k > num_classes:
        raise PredictError(f"--top-k {top_k} is more than the model's {num_classes} classes")
    if names is not None and len(names) != num_classes:
        raise PredictError(
            f"{os.path.join(args.model, 'labels.txt')} names {len(names)} classes, the model has {num_classes}"
        )
    return function, names, top_k


def _report(outcomes, as_json):
    """Prints each file's top classes (or one JSON document) and each failure; returns the exit status."""
    failed, records = 0, []
    for path, top, error in outcomes:
        if error is not None:
            failed += 1
            print(f"error: {shown(path)}: {error}", file=sys.stderr)
            records.append({"path": path, "error": error})
            continue
        if as_json:
            records.append(
                {"path": path, "top": [{"class_id": i, "class_name": n, "probability": p} for i, n, p in top]}
            )
        else:
            print(f"{shown(path)}: " + ", ".join(f"{n} ({p:.3f})" for _, n, p in top))
    if as_json:
        print(json.dumps(records, indent=2))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
