"""The pixel bound every image decoder applies first: an image's size, read from its header.

A 250 KB PNG may declare 16000 x 16000 pixels, which a decoder would turn into gigabytes.
Before any image is decoded, in training (the image-folder scan), in `look` and in
predict.py alike, its width and height are read from its header (PNG IHDR, the JPEG
frame header, the GIF screen and image descriptors, the BMP info header, the WebP VP8,
VP8L or VP8X chunk) and an image of more than MAX_PIXELS pixels is refused, before a byte
of it is decompressed. A GIF's size is the smallest canvas holding its screen and every
frame; an animated GIF or WebP decodes to its first frame only, so frames do not count.
A file of one of these formats whose header does not tell its size is refused too. Other
formats are not judged here (the decoder that knows them checks its own header).

Files are opened only when they are regular files (open_regular): a FIFO named x.png
would block a reader forever, a device never end.

This module imports only the standard library: predict.py imports it, and the predict.py
every export carries, which must run beside the model without the toolkit, has its source
in place of that import (transfer/standalone.py).
"""

import os
import stat
import struct

# The most pixels an image may have: 8192 x 8192, 67.1 megapixels (its decoded RGBA bytes
# are 256 MiB). A photo from a 100-megapixel camera is over it: scale such images down.
MAX_PIXELS = 8192 * 8192

_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _png_size(data):
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack_from(">II", data, 16)


def _jpeg_size(data):
    """The frame header's size; markers are walked as libjpeg does (bytes between segments skipped)."""
    at, end = 2, len(data)
    while at < end:
        if data[at] != 0xFF:
            at += 1
            continue
        while at < end and data[at] == 0xFF:
            at += 1
        if at >= end:
            return None
        marker = data[at]
        at += 1
        if marker in _SOF_MARKERS:
            if at + 7 > end:
                return None
            height, width = struct.unpack_from(">HH", data, at + 3)
            return width, height
        if marker in (0xD9, 0xDA):  # the end, or the scan, before any frame header
            return None
        if marker == 0x01 or marker == 0x00 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if at + 2 > end:
            return None
        at += struct.unpack_from(">H", data, at)[0]
    return None


def _skip_sub_blocks(data, at):
    end = len(data)
    while at < end and data[at]:
        at += data[at] + 1
    return at + 1


def _gif_size(data):
    """The canvas holding the logical screen and every frame's image descriptor."""
    if len(data) < 13:
        return None
    width, height = struct.unpack_from("<HH", data, 6)
    flags = data[10]
    at, end = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), len(data)
    while at < end:
        block = data[at]
        if block == 0x2C:  # an image descriptor: left, top, width, height, flags
            if at + 10 > end:
                break
            left, top, frame_width, frame_height = struct.unpack_from("<HHHH", data, at + 1)
            width, height = max(width, left + frame_width), max(height, top + frame_height)
            flags = data[at + 9]
            at = _skip_sub_blocks(data, at + 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0))
        elif block == 0x21:  # an extension: its label, then sub-blocks
            at = _skip_sub_blocks(data, at + 2)
        else:  # the trailer, or bytes the decoder stops at as well
            break
    return width, height


def _bmp_size(data):
    if len(data) < 26:
        return None
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return (width, abs(height)) if width >= 0 else None


def _webp_size(data):
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "PNG", _png_size),
    (b"\xff\xd8\xff", "JPEG", _jpeg_size),
    (b"GIF87a", "GIF", _gif_size),
    (b"GIF89a", "GIF", _gif_size),
    (b"BM", "BMP", _bmp_size),
)


def image_size(data):
    """Reads an encoded image's width and height from its header, decoding nothing.

    Args:
      data: the file's bytes (only the header is looked at, and for a GIF its block headers).

    Returns:
      (format, width, height): format is "PNG", "JPEG", "GIF", "BMP" or "WEBP", or None
      for any other content; width and height are None when the header is cut short or
      damaged.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        name, size = "WEBP", _webp_size(data)
    else:
        name, size = next(
            ((name, read(data)) for magic, name, read in _FORMATS if data[: len(magic)] == magic), (None, None)
        )
    return (name, *size) if size else (name, None, None)


def too_large(width, height):
    """The refusal of an image of width x height pixels, or None when it is within MAX_PIXELS."""
    if width * height <= MAX_PIXELS:
        return None
    return (
        f"{width} x {height} pixels ({width * height / 1e6:.1f} megapixels), more than the "
        f"{MAX_PIXELS / 1e6:.1f} megapixels an image may have: not decoded; scale it down"
    )


def refusal(data):
    """Why an encoded image must not be decoded, as a phrase naming its size; None when it may be.

    The one rule: a PNG, JPEG, GIF, BMP or WebP image is decoded only when its header tells
    its size and that size is at most MAX_PIXELS. Other content is not judged here.
    """
    name, width, height = image_size(data)
    if name is None:
        return None
    if width is None:
        return f"its {name} header is cut short or damaged: its size cannot be read"
    return too_large(width, height)


class NotARegularFile(OSError):
    """A path that names a FIFO, a socket, a device or a folder where a file is read."""


def _kind(mode):
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    kinds += ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((kind for test, kind in kinds if test(mode)), "not a file")


def open_regular(path):
    """Opens a file for binary reading only when it is a regular file (a link to one counts).

    The path is checked before it is opened, so no FIFO or device is even opened (opening
    one can block or act); the open itself does not block, and what was opened is checked
    again, so a file swapped in between is refused too.

    Raises:
      NotARegularFile: for a FIFO, socket, device or folder; str() says which.
      OSError: the path cannot be opened.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"not a regular file ({_kind(mode)})")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_refusal(path):
    """refusal() of a file (read whole, as its decoder would: a memory map could fault on a
    file cut short while it is read).

    Raises:
      OSError: the file cannot be read or is not a regular file (NotARegularFile).
    """
    with open_regular(path) as stream:
        return refusal(stream.read())
