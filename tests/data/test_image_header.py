"""The pixel bound (data.image_header): one rule for training, look and predict.py.

Generated image files of every format, with the sizes their headers declare patched to
ordinary, odd or absurd values or their headers cut short, go through the three decode
paths: the image-folder scan's check (data.image_folder._find_bad), look's loader
(transfer.look.common.read_image) and predict.py's. Each gives the same verdict, and no
file over the bound reaches a decoder.
"""

import io
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageFile

import predict
from data import image_folder, image_header
from runtime.errors import DataError
from transfer.look import common

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# How each format's header field of the size is patched: the largest value it can hold.
LARGEST_SIDE = {"PNG": 2**31 - 1, "JPEG": 65535, "GIF": 65535, "BMP": 2**31 - 1, "WEBP": 16383}
CASES = 240


# --- Generated files -------------------------------------------------------------------


def _encode(rng, fmt, width, height):
    grey = rng.random() < 0.5
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if grey else pixels)
    options = {}
    if fmt == "JPEG":
        options["progressive"] = rng.random() < 0.5
    if fmt == "WEBP":
        options["lossless"] = rng.random() < 0.5
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _jpeg_frame_header(data):
    """Where the SOF segment's length field starts, walking PIL's well-formed segments."""
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return at + 2


def _declare(data, fmt, width, height):
    """The file with its header declaring width x height (the pixels that follow unchanged)."""
    data = bytearray(data)
    if fmt == "PNG":
        struct.pack_into(">II", data, 16, width, height)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    elif fmt == "JPEG":
        struct.pack_into(">HH", data, _jpeg_frame_header(data) + 3, height, width)
    elif fmt == "GIF":
        struct.pack_into("<HH", data, 6, width, height)
    elif fmt == "BMP":
        struct.pack_into("<ii", data, 18, width, height)
    elif data[12:16] == b"VP8 ":
        struct.pack_into("<HH", data, 26, width, height)
    elif data[12:16] == b"VP8L":
        (bits,) = struct.unpack_from("<I", data, 21)
        struct.pack_into("<I", data, 21, (bits & ~0xFFFFFFF) | (width - 1) | ((height - 1) << 14))
    else:  # VP8X
        data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


# Where each format's size has been read by the time the header ends (JPEG: its SOF segment).
def _header_end(data, fmt):
    return {"PNG": 24, "GIF": 13, "BMP": 26, "WEBP": 30}.get(fmt) or _jpeg_frame_header(data) + 7


_MAGIC_LENGTH = {"PNG": 8, "JPEG": 3, "GIF": 6, "BMP": 2, "WEBP": 12}


def situations(seed=7, count=CASES):
    """Yields (name, bytes, expected): expected is ("decodes", (h, w)), ("refused", reason) or ("any", None)."""
    rng = random.Random(seed)
    for i in range(count):
        fmt = FORMATS[i % len(FORMATS)]
        width, height = rng.randrange(1, 40), rng.randrange(1, 40)
        data = _encode(rng, fmt, width, height)
        kind = rng.choice(("as written", "absurd", "absurd", "odd", "cut"))
        name = f"{i:03d}_{kind.replace(' ', '_')}.{fmt.lower()}"
        if kind == "as written":
            yield name, data, ("decodes", (height, width))
        elif kind == "absurd":
            side = LARGEST_SIDE[fmt]
            width = rng.randrange(image_header.MAX_PIXELS // side + 1, side + 1)
            height = rng.randrange(image_header.MAX_PIXELS // width + 1, side + 1)
            if rng.random() < 0.5:
                width, height = height, width
            reason = f"{width} x {height} pixels ({width * height / 1e6:.1f} megapixels), more than the 67.1 megapixels"
            yield name, _declare(data, fmt, width, height), ("refused", reason)
        elif kind == "odd":  # within the bound, but not what the pixels hold: decoders may disagree
            yield name, _declare(data, fmt, rng.randrange(1, 1200), rng.randrange(1, 1200)), ("any", None)
        else:
            cut = rng.randrange(_MAGIC_LENGTH[fmt], _header_end(data, fmt))
            yield name, data[:cut], ("refused", f"its {fmt} header is cut short or damaged: its size cannot be read")


# --- The three decode paths -------------------------------------------------------------


def _training(paths, monkeypatch):
    decoded = []
    real = image_folder.decoding._decode_failures

    def recording(some):
        decoded.extend(some)
        return real(some)

    # _find_bad calls the decoder of its own module, data.image_folder.decoding.
    monkeypatch.setattr(image_folder.decoding, "_decode_failures", recording)
    failures = image_folder._find_bad(paths)
    return {paths[i]: reason for i, reason in failures.items()}, [image_header.file_refusal(p) for p in decoded]


def _look(paths, monkeypatch):
    loaded = []
    real = ImageFile.ImageFile.load

    def recording(self):
        loaded.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    verdicts = {}
    for path in paths:
        _, width, height = image_header.image_size(Path(path).read_bytes()[:4096])
        shape = (height or 1, width or 1, 3)
        try:
            common.read_image(path, shape, "probe")
            verdicts[path] = None
        except DataError as error:
            # A decoded image of another channel count than the probe's still decoded.
            verdicts[path] = None if "channels (" in str(error) else str(error)
    return verdicts, loaded


def _predict(paths):
    seen = []

    def model(encoded):
        rows = []
        for contents in encoded:
            seen.append(image_header.refusal(contents.numpy()))
            image_folder.decode(contents)
            rows.append([0.25, 0.75])
        return {"probabilities": tf.constant(rows, tf.float32)}

    verdicts = {path: error for path, _, error in predict.predict(paths, model, 1, None)}
    return verdicts, seen


def test_every_decode_path_gives_the_rule_s_verdict(tmp_path, monkeypatch):
    """Rule 7: decoded within the bound, or refused in one line naming the file and its size."""
    cases = list(situations())
    assert len(cases) == CASES
    paths = []
    for name, data, _ in cases:
        paths.append(str(tmp_path / name))
        Path(paths[-1]).write_bytes(data)
    training, trained = _training(paths, monkeypatch)
    look, loaded = _look(paths, monkeypatch)
    predicted, seen = _predict(paths)

    tally = {"decodes": 0, "refused": 0, "any": 0}
    for path, (_, _, (verdict, detail)) in zip(paths, cases):
        tally[verdict] += 1
        if verdict == "decodes":
            assert path not in training and look[path] is None and predicted[path] is None, path
        elif verdict == "refused":
            assert training[path].startswith(detail), (path, training[path])
            assert predicted[path] == training[path]
            assert look[path] == f"{path}: {training[path]}"
        else:  # any outcome, but never the bound's, and always one line
            for outcome in (training.get(path), look[path], predicted[path]):
                assert outcome is None or ("\n" not in outcome and "megapixels" not in outcome), outcome
    # Nothing over the bound reached a decoder, on any path; the scan's decoder saw every file that decodes
    # (the recording is in place, so the check above it is not vacuous).
    assert all(refusal is None for refusal in trained + seen)
    assert len(trained) >= tally["decodes"], (len(trained), tally)
    assert all(width * height <= image_header.MAX_PIXELS for width, height in loaded)
    assert tally["refused"] > 100 and tally["decodes"] > 30 and tally["any"] > 30, tally


def test_the_issue_png_is_refused_naming_its_size(tmp_path):
    """A PNG declaring 16000 x 16000 pixels, with a few bytes of pixels, is not decoded."""
    header = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 16000, 16000, 8, 2, 0, 0, 0)
    )
    data = header + struct.pack(">I", zlib.crc32(header[12:])) + b"\x00" * 64
    root = tmp_path / "folder"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(_encode(random.Random(i), "PNG", 8, 8))
    (root / "a" / "huge.png").write_bytes(data)
    scan = image_folder.scan(str(root), validation_percent=0, test_percent=0)
    expected = "16000 x 16000 pixels (256.0 megapixels), more than the 67.1 megapixels an image may have: not decoded"
    assert [(b.path, b.reason.split("; ")[0]) for b in scan.bad] == [(str(root / "a" / "huge.png"), expected)]
    assert f"  {root / 'a' / 'huge.png'}: {expected}; scale it down" in scan.report_lines()


def test_a_gif_frame_beyond_its_screen_counts(tmp_path):
    data = bytearray(_encode(random.Random(0), "GIF", 4, 4))
    at = data.index(b"\x2c\x00\x00\x00\x00\x04\x00\x04\x00")
    struct.pack_into("<HH", data, at + 5, 9000, 9000)
    assert image_header.image_size(bytes(data)) == ("GIF", 9000, 9000)
    assert image_header.refusal(bytes(data)).startswith("9000 x 9000 pixels (81.0 megapixels)")


def test_look_refuses_what_pil_would_call_a_bomb_in_one_line(tmp_path):
    # A TIFF: a format the header rule does not read, bounded by PIL's size instead; PIL's
    # own DecompressionBombError was a traceback.
    path = tmp_path / "bomb.tiff"
    out = io.BytesIO()
    Image.new("L", (20000, 10)).save(out, "TIFF")
    data = bytearray(out.getvalue())
    # The ImageLength tag (257) of the first IFD, as PIL writes it: a SHORT or LONG value.
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for k in range(entries):
        tag, kind = struct.unpack_from("<HH", data, ifd + 2 + 12 * k)
        if tag == 257:
            struct.pack_into("<I" if kind == 4 else "<H", data, ifd + 2 + 12 * k + 8, 20000)
    path.write_bytes(bytes(data))

    with pytest.raises(DataError) as raised:
        common.read_image(str(path), (28, 28, 1), "probe")
    assert str(raised.value) == (
        f"{path}: 20000 x 20000 pixels (400.0 megapixels), more than the 67.1 megapixels an image may have: "
        "not decoded; scale it down"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(image_header.NotARegularFile, match=r"not a regular file \(a FIFO\)"):
        image_header.open_regular(str(fifo))
    assert image_folder._find_bad([str(fifo)]) == {0: "not a regular file (a FIFO)"}
    with pytest.raises(DataError, match=r"x.png: not a readable image \(not a regular file \(a FIFO\)\)"):
        common.read_image(str(fifo), (28, 28, 1), "probe")
