"""Small files a user names on a flag (labels, class maps, name maps) are read as bounded data:
whatever the path holds, one line, never a wait, a memory blow-up or a traceback."""

import os

import pytest

from runtime import userfiles
from runtime.errors import UserError


def _refusal(call):
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_what_is_not_a_small_regular_utf8_file_is_one_line(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would wait for a writer for ever
    big = tmp_path / "big.txt"
    big.write_text("x" * 101)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    cases = [
        (fifo, f"--source-labels {fifo} is not a regular file"),
        ("/dev/zero", "--source-labels /dev/zero is not a regular file"),
        (tmp_path, f"--source-labels {tmp_path} is a folder, not a file"),
        (tmp_path / "gone.txt", f"--source-labels {tmp_path / 'gone.txt'}: No such file or directory"),
        (big, f"--source-labels {big} is 101 bytes; at most 100 are read"),
        (latin, f"--source-labels {latin} is not UTF-8 text"),
    ]
    for path, message in cases:
        assert _refusal(lambda: userfiles.read_text(path, "--source-labels", limit=100)) == message


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbftench\ngoldfish\n")
    assert userfiles.read_text(path, "--source-labels").splitlines() == ["tench", "goldfish"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "it nests too deeply"),
        ('{"a": {"b": ' * 50_000 + "1" + "}}" * 50_000, "it nests too deeply"),
        ('{"cat": 1, "cat": 2}', "it names 'cat' twice"),
        ("{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ],
    ids=["deep list", "deep object", "a key twice", "cut short"],
)
def test_json_that_does_not_parse_is_one_line(text, reason):
    assert _refusal(lambda: userfiles.parse_json(text, "--class-map", "map.json")) == (
        f"--class-map map.json is not JSON: {reason}"
    )
