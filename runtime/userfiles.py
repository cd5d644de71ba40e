"""Small text files a user hands the toolkit (labels, class maps, name maps), read as bounded data.

A path on a flag may name anything: a FIFO (reading it waits for a writer for ever), a
device (`/dev/zero` never ends), a file of gigabytes, JSON nested deeper than the parser's
recursion. Each is refused in one line before it costs time or memory: the file is opened
without blocking and must be a regular file of at most `limit` bytes, UTF-8 (a leading
byte-order mark dropped, as editors on Windows write one).
"""

import json
import os
import stat

from runtime.errors import UserError, one_line
from runtime.paths import shown

TEXT_LIMIT = 16 << 20  # bytes: ImageNet-21k's class names are 1 MB


def read_text(path, what, limit=TEXT_LIMIT):
    """The text of a regular UTF-8 file of at most `limit` bytes.

    Args:
      what: how messages name the file's role ("--source-labels").

    Raises:
      UserError: `what PATH: why`, for a file that cannot be opened, is no regular file, is
        larger than `limit` or is not UTF-8.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, to be refused below
    except OSError as error:
        raise UserError(f"{what} {shown(path)}: {error.strerror or one_line(error)}") from None
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise UserError(f"{what} {shown(path)} is a folder, not a file")
        if not stat.S_ISREG(status.st_mode):
            raise UserError(f"{what} {shown(path)} is not a regular file")
        if status.st_size > limit:
            raise UserError(f"{what} {shown(path)} is {status.st_size:,} bytes; at most {limit:,} are read")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:  # grew since the check
        raise UserError(f"{what} {shown(path)} is over {limit:,} bytes; at most {limit:,} are read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{what} {shown(path)} is not UTF-8 text") from None


def no_duplicate_keys(pairs):
    """json's object_pairs_hook that refuses an object naming a key twice (json keeps the last one silently)."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"it names {sorted(k for k in keys if keys.count(k) > 1)[0]!r} twice")
    return dict(pairs)


# What json.loads raises for a text it refuses: ValueError (UnicodeDecodeError among them), and
# RecursionError for a document nested deeper than the parser goes.
JSON_ERRORS = (ValueError, RecursionError)


def json_refusal(error):
    """Why json.loads refused a text (one of JSON_ERRORS), in a few words."""
    return "it nests too deeply" if isinstance(error, RecursionError) else one_line(error)


def parse_json(text, what, where):
    """The JSON document of `text` (a key named twice refused), or UserError `what WHERE is not JSON: why`."""
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except JSON_ERRORS as error:
        raise UserError(f"{what} {where} is not JSON: {json_refusal(error)}") from None
