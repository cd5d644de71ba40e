"""The on-disk feature cache: keys, verified entries, atomic writes, the size bound, refusals."""

import contextlib
import errno
import hashlib
import itertools
import os
import random
import shutil
import signal
import tempfile
import threading

import numpy as np
import pytest

from runtime.errors import DataError, UserError
from transfer import feature_cache as fc

UNITS = 6
ENTRY = fc.HEADER_BYTES + 4 * UNITS
OLD = 1_000_000_000  # an mtime in 2001: older than any entry written by a test


def _variables(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv1/kernel": rng.standard_normal([5, 5, 1, 4]).astype(np.float32),
        "conv1/bias": rng.standard_normal([4]).astype(np.float32),
        "conv2/kernel": rng.standard_normal([5, 5, 4, 8]).astype(np.float32),
    }


def _key(**changes):
    args = dict(variables=_variables(), network="cae", input_spec=[28, 28, 1], preprocessing="idx/255 v1")
    args.update(tensor="conv2/Relu:0")
    args.update(changes)
    return fc.model_key(**args)


def _images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, [count, 4, 4], dtype=np.uint8)


def _features(count, seed=0):
    return np.random.default_rng(seed + 100).standard_normal([count, UNITS]).astype(np.float32)


def _cache(path, key=None, units=UNITS, **kwargs):
    lines = []
    cache = fc.FeatureCache(str(path), key or _key(), units, log=lines.append, **kwargs)
    return cache, lines


def _entry_path(cache, image_key):
    return os.path.join(cache.directory, cache.key, image_key[:2], image_key + ".f32")


def _all_files(root):
    return sorted(os.path.relpath(os.path.join(top, name), root) for top, _, names in os.walk(root) for name in names)


# Keys.


def test_model_key_same_values_in_another_order_give_the_same_key():
    variables = _variables()
    reordered = {name: variables[name].copy() for name in reversed(list(variables))}
    assert list(reordered) != list(variables)
    assert _key(variables=reordered) == _key()
    assert len(_key()) == 64 and int(_key(), 16) >= 0


@pytest.mark.parametrize(
    "change",
    ["one byte", "dtype", "shape", "name", "extra variable", "network", "input spec", "preprocessing", "tensor"],
)
def test_model_key_changes_with_anything_the_features_depend_on(change):
    variables = _variables()
    if change == "one byte":
        raw = variables["conv2/kernel"].reshape(-1).view(np.uint8).copy()
        raw[137] ^= 1
        variables["conv2/kernel"] = raw.view(np.float32).reshape(variables["conv2/kernel"].shape)
        key = _key(variables=variables)
    elif change == "dtype":
        variables["conv1/bias"] = variables["conv1/bias"].astype(np.float64)
        key = _key(variables=variables)
    elif change == "shape":
        variables["conv1/kernel"] = variables["conv1/kernel"].reshape([5, 5, 4, 1])
        key = _key(variables=variables)
    elif change == "name":
        variables["encoder/conv1/bias"] = variables.pop("conv1/bias")
        key = _key(variables=variables)
    elif change == "extra variable":
        variables["conv2/bias"] = np.zeros([8], np.float32)
        key = _key(variables=variables)
    elif change == "network":
        key = _key(network="cae_v2")
    elif change == "input spec":
        key = _key(input_spec=[32, 32, 1])
    elif change == "preprocessing":
        key = _key(preprocessing="idx/255 v2")
    else:
        key = _key(tensor="conv1/Relu:0")
    assert key != _key()


def test_model_key_does_not_depend_on_byte_order():
    variables = _variables()
    swapped = {name: value.astype(value.dtype.newbyteorder(">")) for name, value in variables.items()}
    assert swapped["conv1/bias"].tobytes() != variables["conv1/bias"].tobytes()
    assert _key(variables=swapped) == _key()


def test_model_key_refuses_values_without_stable_bytes():
    with pytest.raises(ValueError, match="dtype object"):
        _key(variables={"conv1/kernel": np.array([{"not": "numbers"}], dtype=object)})


def test_file_keys_are_the_sha256_of_the_bytes_and_name_an_unreadable_file(tmp_path):
    first, second, same = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "moved.png"
    first.write_bytes(b"\x89PNG first" * 1000)
    second.write_bytes(b"\x89PNG second")
    same.write_bytes(first.read_bytes())
    keys = fc.file_keys([first, second, same])
    assert keys[0] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert keys[1] == hashlib.sha256(second.read_bytes()).hexdigest()
    assert keys[2] == keys[0] != keys[1]
    with pytest.raises(DataError, match=r"gone\.png: cannot read it for the feature cache"):
        fc.file_keys([first, tmp_path / "gone.png"])


def test_array_keys_follow_pixels_and_shape():
    images = _images(3)
    keys = fc.array_keys(images)
    assert len(set(keys)) == 3
    assert fc.array_keys(list(images.copy())) == keys
    changed = images.copy()
    changed[1, 2, 3] ^= 1
    changed_keys = fc.array_keys(changed)
    assert changed_keys[0] == keys[0] and changed_keys[2] == keys[2]
    assert changed_keys[1] != keys[1]
    # Same bytes, another shape: another image.
    assert fc.array_keys(images.reshape(3, 2, 8))[0] != keys[0]
    assert fc.array_keys(images.reshape(3, 4, 4, 1))[0] != keys[0]


# Hits and misses.


def test_store_then_lookup_returns_the_same_features_bit_for_bit(tmp_path):
    cache, lines = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(5)), _features(5)
    got, missing = cache.lookup(keys)
    assert missing.all() and not got.any()
    assert cache.store(keys[:3], features[:3]) == 3
    got, missing = cache.lookup(keys)
    assert missing.tolist() == [False, False, False, True, True]
    assert got.dtype == np.float32 and got.shape == (5, UNITS)
    assert got[:3].tobytes() == features[:3].tobytes()
    assert not got[3:].any()
    # A new object (the next run) reads what the first wrote.
    again, _ = _cache(tmp_path / "cache")
    assert again.lookup(keys[:3])[0].tobytes() == features[:3].tobytes()
    assert str(cache.stats()) == "feature cache: 3 hits, 7 misses"
    assert lines == []


def test_get_or_compute_computes_only_the_missing_and_stores_them(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(8)), _features(8)
    cache.store(keys[::2], features[::2])
    asked = []

    def compute(indices):
        asked.append(indices.tolist())
        return features[indices]

    got, hits, misses = cache.get_or_compute(keys, compute)
    assert (hits, misses) == (4, 4) and asked == [[1, 3, 5, 7]]
    assert got.tobytes() == features.tobytes()
    got, hits, misses = cache.get_or_compute(keys, compute)
    assert (hits, misses) == (8, 0) and len(asked) == 1
    assert got.tobytes() == features.tobytes()


def test_get_or_compute_stores_chunk_by_chunk_so_an_interrupted_run_keeps_its_progress(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(7)), _features(7)
    cache.store(keys[1:2], features[1:2])
    asked = []

    def compute(indices):
        asked.append(indices.tolist())
        if len(asked) == 3:
            raise KeyboardInterrupt
        return features[indices]

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(keys, compute, chunk_size=2)
    assert asked == [[0, 2], [3, 4], [5, 6]]
    assert cache.lookup(keys)[1].tolist() == [False, False, False, False, False, True, True]
    got, hits, misses = cache.get_or_compute(keys, lambda i: asked.append(i.tolist()) or features[i], chunk_size=2)
    assert asked[-1] == [5, 6] and len(asked) == 4 and (hits, misses) == (5, 2)
    assert got.tobytes() == features.tobytes()


def test_another_model_key_or_units_misses(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    keys = fc.array_keys(_images(4))
    cache.store(keys, _features(4))
    other, _ = _cache(tmp_path / "cache", key=_key(preprocessing="other"))
    assert other.lookup(keys)[1].all()
    # Same model key, other units: the entries do not fit and are not trusted.
    wider, _ = _cache(tmp_path / "cache", units=UNITS + 1)
    got, missing = wider.lookup(keys)
    assert missing.all() and not got.any() and wider.stats().invalid == 4


def test_an_entry_copied_under_another_model_key_is_stale(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    other, _ = _cache(tmp_path / "cache", key=_key(network="other"))
    keys = fc.array_keys(_images(2))
    cache.store(keys, _features(2))
    other.store(keys[1:], _features(1, seed=5))
    # Right size, right image key, other model key inside: as if a user copied folders around.
    os.replace(_entry_path(cache, keys[0]), _entry_path(other, keys[1]))
    got, missing = other.lookup(keys[1:])
    assert missing.tolist() == [True] and other.stats().invalid == 1
    # An entry renamed to another image's name in the same key is caught by the image key in its header.
    os.makedirs(os.path.dirname(_entry_path(cache, keys[0])), exist_ok=True)
    os.rename(_entry_path(cache, keys[1]), _entry_path(cache, keys[0]))
    assert cache.lookup(keys[:1])[1].tolist() == [True]


@pytest.mark.parametrize("damage", ["flip payload byte", "flip header byte", "flip checksum byte", "truncate", "empty"])
def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path, damage):
    cache, _ = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(3)), _features(3)
    cache.store(keys, features)
    path = _entry_path(cache, keys[1])
    data = bytearray(open(path, "rb").read())
    assert len(data) == ENTRY
    if damage == "flip payload byte":
        data[fc.HEADER_BYTES + 9] ^= 0x40
    elif damage == "flip header byte":
        data[20] ^= 0x01  # inside the model key
    elif damage == "flip checksum byte":
        data[fc.HEADER_BYTES - 1] ^= 0x80
    elif damage == "truncate":
        data = data[: ENTRY - 4]
    else:
        data = bytearray()
    with open(path, "wb") as stream:
        stream.write(data)

    fresh, _ = _cache(tmp_path / "cache")
    got, missing = fresh.lookup(keys)
    assert missing.tolist() == [False, True, False]
    assert not got[1].any() and str(fresh.stats()) == "feature cache: 2 hits, 1 misses (1 corrupt or stale)"
    recomputed = []
    got, hits, misses = fresh.get_or_compute(keys, lambda i: recomputed.append(i.tolist()) or features[i])
    assert recomputed == [[1]] and (hits, misses) == (2, 1)
    assert got.tobytes() == features.tobytes()
    assert os.path.getsize(path) == ENTRY
    assert fresh.lookup(keys)[1].tolist() == [False, False, False]


def test_a_symlink_named_like_an_entry_is_not_followed(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(2)), _features(2)
    cache.store(keys, features)
    # A valid entry, moved out and linked back: the cache never writes links, so it is not its entry.
    outside = tmp_path / "elsewhere.f32"
    os.replace(_entry_path(cache, keys[1]), outside)
    os.symlink(outside, _entry_path(cache, keys[1]))
    assert cache.lookup(keys)[1].tolist() == [False, True]


def test_malformed_keys_and_shapes_are_refused(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    good = fc.array_keys(_images(1))
    for bad in ["../" + good[0][3:], good[0].upper(), good[0][:-1], 17]:
        with pytest.raises(ValueError, match="is not 64 lowercase hex digits"):
            cache.lookup([bad])
    with pytest.raises(ValueError, match=r"shape \[1, 5\]"):
        cache.store(good, np.zeros([1, UNITS - 1], np.float32))
    with pytest.raises(ValueError, match="compute_fn returned shape"):
        cache.get_or_compute(good, lambda i: np.zeros([len(i), 2]))
    with pytest.raises(ValueError, match="model key"):
        fc.FeatureCache(str(tmp_path / "c2"), "abc", UNITS)
    with pytest.raises(UserError, match="size limit 0"):
        fc.FeatureCache(str(tmp_path / "c2"), _key(), UNITS, max_bytes=0)
    assert _all_files(tmp_path / "cache") == sorted([fc.MARKER, fc.CACHEDIR_TAG])


def test_concurrent_rewrites_never_show_a_reader_half_an_entry(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    keys = fc.array_keys(_images(4))
    versions = [_features(4, seed=s) for s in range(3)]
    cache.store(keys, versions[0])
    reader, _ = _cache(tmp_path / "cache")
    stop = threading.Event()

    def rewrite():
        writer, _ = _cache(tmp_path / "cache")
        round_ = 0
        while not stop.is_set():
            round_ += 1
            writer.store(keys, versions[round_ % 3])

    thread = threading.Thread(target=rewrite)
    thread.start()
    try:
        for _ in range(300):
            got, missing = reader.lookup(keys)
            assert not missing.any()
            for row in range(4):
                assert any(got[row].tobytes() == version[row].tobytes() for version in versions)
    finally:
        stop.set()
        thread.join()
    assert reader.stats().invalid == 0


# Atomic writes, unwritable caches.


def test_an_interrupted_write_leaves_no_entry_and_no_temporary(tmp_path, monkeypatch):
    cache, _ = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(3)), _features(3)
    cache.store(keys[:1], features[:1])
    before = _all_files(tmp_path / "cache")
    real_replace = os.replace

    def interrupted(source, destination, **fds):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.store(keys[1:], features[1:])
    monkeypatch.setattr(os, "replace", real_replace)
    assert _all_files(tmp_path / "cache") == before
    assert cache.lookup(keys)[1].tolist() == [False, True, True]


def test_a_full_disk_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    cache, lines = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(6)), _features(6)
    cache.store(keys[:2], features[:2])
    before = _all_files(tmp_path / "cache")

    def full(source, destination, **fds):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    got, hits, misses = cache.get_or_compute(keys, lambda i: features[i])
    assert got.tobytes() == features.tobytes() and (hits, misses) == (2, 4)
    assert cache.store(keys[2:], features[2:]) == 0
    got, hits, misses = cache.get_or_compute(keys, lambda i: features[i])
    assert got.tobytes() == features.tobytes() and (hits, misses) == (2, 4)
    assert len(lines) == 1 and lines == cache.warnings
    assert "cannot be written (no space left on device)" in lines[0] and lines[0].startswith("warning: ")
    assert _all_files(tmp_path / "cache") == before  # no temporary files left behind


@contextlib.contextmanager
def _read_only(folders):
    """The folders cannot be written in this block: chmod, or for root a switch to nobody's effective uid."""
    if os.geteuid() == 0:
        # The real uid stays 0, so the effective uid can be switched back afterwards.
        os.seteuid(65534)
        try:
            yield
        finally:
            os.seteuid(0)
    else:
        for folder in folders:
            os.chmod(folder, 0o555)
        try:
            yield
        finally:
            for folder in folders:
                os.chmod(folder, 0o755)


def test_a_read_only_cache_serves_hits_and_warns_once():
    # Not under tmp_path: pytest makes that root-only, and nobody must be able to read the cache.
    root = tempfile.mkdtemp(prefix="feature-cache-ro-")
    try:
        os.chmod(root, 0o755)
        cache, _ = _cache(os.path.join(root, "cache"))
        keys, features = fc.array_keys(_images(4)), _features(4)
        cache.store(keys[:2], features[:2])
        folders = [folder for folder, _, _ in os.walk(cache.directory)]
        outcomes = []
        with _read_only(folders):
            with pytest.raises(PermissionError):
                open(os.path.join(folders[-1], "probe"), "w").close()
            reader, lines = _cache(cache.directory)
            for _ in range(2):
                got, hits, misses = reader.get_or_compute(keys, lambda i: features[i])
                outcomes.append((got.tobytes() == features.tobytes(), hits, misses))
        assert outcomes == [(True, 2, 2), (True, 2, 2)]
        assert len(lines) == 1 and "cannot be written" in lines[0] and "Permission denied" in lines[0]
        assert sorted(_entries(cache.directory)) == sorted(
            os.path.join(cache.key, key[:2], key + ".f32") for key in keys[:2]
        )
    finally:
        shutil.rmtree(root)


def test_a_cache_that_cannot_be_created_runs_without_storing(tmp_path, monkeypatch):
    def refuse(path, mode=0o777, exist_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "makedirs", refuse)
    cache, lines = _cache(tmp_path / "nowhere" / "cache")
    keys, features = fc.array_keys(_images(2)), _features(2)
    got, hits, misses = cache.get_or_compute(keys, lambda i: features[i])
    assert got.tobytes() == features.tobytes() and (hits, misses) == (0, 2)
    assert len(lines) == 1 and "Permission denied" in lines[0]
    assert not (tmp_path / "nowhere").exists()


# Refusals and deletion.


def test_a_foreign_non_empty_directory_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(UserError, match=r"photos is a non-empty directory without cae-transfer-feature-cache\.json"):
        _cache(folder)
    assert _all_files(folder) == ["holiday.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a directory"):
        _cache(tmp_path / "file")
    (folder / fc.MARKER).write_text('{"toolkit": "someone else"}')
    with pytest.raises(UserError, match="was not written by cae-transfer"):
        _cache(folder)


def test_an_empty_directory_is_adopted(tmp_path):
    (tmp_path / "empty").mkdir()
    cache, _ = _cache(tmp_path / "empty")
    assert _all_files(tmp_path / "empty") == sorted([fc.MARKER, fc.CACHEDIR_TAG])
    assert open(tmp_path / "empty" / fc.CACHEDIR_TAG).read().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    _cache(tmp_path / "empty")  # and accepted the next time


def test_deleting_the_cache_at_any_time_only_costs_misses(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(4)), _features(4)
    cache.store(keys[:2], features[:2])
    os.remove(_entry_path(cache, keys[0]))
    assert cache.lookup(keys[:2])[1].tolist() == [True, False]
    for top, dirs, names in os.walk(tmp_path / "cache", topdown=False):
        for name in names:
            os.remove(os.path.join(top, name))
        for name in dirs:
            os.rmdir(os.path.join(top, name))
    os.rmdir(tmp_path / "cache")
    assert cache.lookup(keys)[1].all()
    assert cache.store(keys, features) == 4
    # Made again with its marker, so the next run accepts it.
    again, lines = _cache(tmp_path / "cache")
    assert again.lookup(keys)[0].tobytes() == features.tobytes() and lines == []


# The size bound.


def _age(cache, image_keys, mtime):
    for image_key in image_keys:
        os.utime(_entry_path(cache, image_key), (mtime, mtime))


def _entries(root):
    return [name for name in _all_files(root) if name.endswith(".f32")]


def test_eviction_keeps_the_bound_the_current_call_and_the_recently_used(tmp_path):
    limit = 10 * ENTRY
    cache, lines = _cache(tmp_path / "cache", max_bytes=limit)
    keys, features = fc.array_keys(_images(20)), _features(20)
    cache.store(keys[:8], features[:8])
    _age(cache, keys[:8], OLD)
    _age(cache, keys[4:8], OLD + 100)  # 4..7 used more recently than 0..3
    assert cache.store(keys[8:13], features[8:13]) == 5
    on_disk = _entries(tmp_path / "cache")
    assert len(on_disk) * ENTRY <= limit * fc.LOW_WATER
    _, missing = cache.lookup(keys[:13])
    assert not missing[8:13].any()  # the current call's entries all stay
    assert missing[:4].all() and not missing[4:8].any()  # the least recently used go first
    assert cache.stats().evicted == 4 and len(on_disk) == 9
    assert lines == []


def test_a_hit_refreshes_the_lru_clock(tmp_path):
    cache, _ = _cache(tmp_path / "cache", max_bytes=6 * ENTRY)
    keys, features = fc.array_keys(_images(10)), _features(10)
    cache.store(keys[:5], features[:5])
    for index in range(5):
        _age(cache, keys[index : index + 1], OLD + index)
    _age(cache, keys[:1], OLD - 50)  # 0 is the oldest, but it is about to be used
    cache.lookup(keys[:1])
    assert os.path.getmtime(_entry_path(cache, keys[0])) > OLD
    cache.store(keys[5:7], features[5:7])
    _, missing = cache.lookup(keys[:7])
    assert missing.tolist() == [False, True, True, False, False, False, False]


def test_eviction_spans_model_keys_and_keeps_this_calls_hits(tmp_path):
    limit = 8 * ENTRY
    other, _ = _cache(tmp_path / "cache", key=_key(network="other"), max_bytes=limit)
    cache, _ = _cache(tmp_path / "cache", max_bytes=limit)
    keys, features = fc.array_keys(_images(8)), _features(8)
    other.store(keys[:4], features[:4])
    cache.store(keys[:3], features[:3])
    _age(other, keys[:4], OLD + 10)
    _age(cache, keys[:3], OLD)  # this key's hits are the oldest of all, and are used by this call
    got, hits, misses = cache.get_or_compute(keys, lambda i: features[i])
    assert (hits, misses) == (3, 5)
    assert not cache.lookup(keys)[1].any()
    assert len(_entries(tmp_path / "cache")) * ENTRY <= limit
    assert other.lookup(keys[:4])[1].all()  # the other key's entries were older than this call's


def test_a_call_larger_than_the_limit_caches_what_fits_with_a_warning(tmp_path):
    cache, lines = _cache(tmp_path / "cache", max_bytes=3 * ENTRY + 5)
    keys, features = fc.array_keys(_images(5)), _features(5)
    assert cache.store(keys, features) == 3
    assert len(_entries(tmp_path / "cache")) == 3
    assert len(lines) == 1
    assert "holds 3 entries of 6 floats, fewer than this call's 5; the rest are computed but not cached" in lines[0]
    # Chunk by chunk, a call's earlier chunks count against the limit too; still one warning.
    again, lines = _cache(tmp_path / "again", max_bytes=3 * ENTRY + 5)
    got, hits, misses = again.get_or_compute(keys, lambda i: features[i], chunk_size=2)
    assert got.tobytes() == features.tobytes() and (hits, misses) == (0, 5)
    assert len(_entries(tmp_path / "again")) == 3 and len(lines) == 1


def test_eviction_never_touches_files_it_did_not_write(tmp_path):
    cache, _ = _cache(tmp_path / "cache", max_bytes=4 * ENTRY)
    keys, features = fc.array_keys(_images(12)), _features(12)
    cache.store(keys[:3], features[:3])
    key_dir = os.path.join(cache.directory, cache.key)
    shard = os.path.join(key_dir, keys[0][:2])
    wrong_shard = "00" if keys[1][:2] != "00" else "01"
    foreign = {
        os.path.join(cache.directory, "notes.txt"): b"mine",
        os.path.join(cache.directory, keys[5]): b"a bare hex name",
        os.path.join(key_dir, "README"): b"mine",
        os.path.join(shard, keys[0].upper() + ".f32"): b"upper case",
        os.path.join(shard, keys[0] + ".f32.bak"): b"a backup",
        os.path.join(shard, keys[0] + ".F32"): b"x",
        os.path.join(shard, "." + keys[0] + ".f32.tmp"): b"not our temp pattern",
        # An entry name in the wrong shard is not a name this cache gives.
        os.path.join(key_dir, wrong_shard, keys[1] + ".f32"): b"x" * ENTRY,
        os.path.join(cache.directory, "user" + "0" * 60, keys[1][:2], keys[1] + ".f32"): b"x" * ENTRY,
    }
    for path, data in foreign.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(data)
        os.utime(path, (OLD - 1000, OLD - 1000))
    # A leftover of a killed process (our pattern, hours old) is ours to remove; a fresh one is not.
    stale = os.path.join(shard, f".{keys[0]}.f32.4242.0badf00d.0.tmp")
    fresh = os.path.join(shard, f".{keys[0]}.f32.4243.0badf00d.0.tmp")
    for path in (stale, fresh):
        with open(path, "wb") as stream:
            stream.write(b"\0" * ENTRY)
    os.utime(stale, (OLD, OLD))
    for start in range(3, 12, 3):
        cache.store(keys[start : start + 3], features[start : start + 3])
    for path, data in foreign.items():
        assert open(path, "rb").read() == data, path
    assert not os.path.exists(stale) and os.path.exists(fresh)
    ours = [name for name in _entries(tmp_path / "cache") if name.startswith(cache.key + os.sep)]
    ours = [name for name in ours if name.split(os.sep)[1] != wrong_shard and name.split(os.sep)[2].islower()]
    assert sorted(ours) == sorted(os.path.join(cache.key, key[:2], key + ".f32") for key in keys[9:12])


def test_a_fifo_named_like_an_entry_is_a_miss_not_a_hang(tmp_path):
    cache, _ = _cache(tmp_path / "cache")
    keys, features = fc.array_keys(_images(2)), _features(2)
    cache.store(keys, features)
    os.remove(_entry_path(cache, keys[1]))
    os.mkfifo(_entry_path(cache, keys[1]))

    class Blocked(Exception):
        pass  # not an OSError, which the cache would take for an unreadable entry

    def blocked(signum, frame):
        raise Blocked("the lookup blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(10)
    try:
        assert cache.lookup(keys)[1].tolist() == [False, True]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_eviction_that_cannot_delete_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    cache, lines = _cache(tmp_path / "cache", max_bytes=4 * ENTRY)
    keys, features = fc.array_keys(_images(8)), _features(8)
    cache.store(keys[:4], features[:4])

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(os, "unlink", read_only)
    got, hits, misses = cache.get_or_compute(keys[4:], lambda i: features[4:][i], chunk_size=2)
    assert got.tobytes() == features[4:].tobytes() and (hits, misses) == (0, 4)
    assert len(lines) == 1 and "cannot be written (read-only file system)" in lines[0]
    assert cache.stats().evicted == 0 and cache.stats().stored == 4 + 2  # the second chunk was not written
    assert cache.lookup(keys)[1].tolist() == [False] * 6 + [True] * 2


# Links: nothing below the cache directory is reached through a link the cache did not make.

LINK_LEVELS = ("key", "shard", "entry", "temporary", "marker", "stray")
LINK_TARGETS = ("outside_folder", "outside_file", "dangling", "other_key", "loop", "dot")
LINK_REQUEST = 8


def _tree(root):
    """{relative path: what is there} of everything below root, links not followed: contents and mtimes of files."""
    state = {}
    for top, folders, names in os.walk(root):
        for name in folders + names:
            path = os.path.join(top, name)
            info = os.lstat(path)
            if os.path.islink(path):
                state[os.path.relpath(path, root)] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as stream:
                    state[os.path.relpath(path, root)] = ("file", stream.read(), info.st_mtime_ns)
            else:
                state[os.path.relpath(path, root)] = ("folder",)
    return state


class _LinkWorld:
    """A cache of two model keys with prior entries, user files outside it, and links planted in it."""

    def __init__(self, root, rng):
        self.rng = rng
        self.cache = root / "cache"
        self.outside = root / "outside"
        (self.outside / "photos").mkdir(parents=True)
        (self.outside / "notes.txt").write_text("the user's notes")
        (self.outside / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8\xff the user's photo")
        self.images = fc.array_keys(_images(16))
        self.models = [_key(), _key(network="other")]
        self.truth = {model: _features(16, seed=seed) for seed, model in enumerate(self.models)}
        for model, first in zip(self.models, (0, 4)):
            fc.FeatureCache(str(self.cache), model, UNITS, log=None).store(
                self.images[first : first + 8], self.truth[model][first : first + 8]
            )
        self.links = {}  # path: (level, model, image key)
        self.decoys = 0

    def _decoy(self, model, level, image_key):
        """A folder outside shaped like the cache, holding valid entries of model with wrong features."""
        self.decoys += 1
        decoy = self.outside / f"moved-{self.decoys}"
        fc.FeatureCache(str(decoy), model, UNITS, log=None).store(self.images, self.truth[model] + 1000)
        parts = {"key": [model], "shard": [model, image_key[:2]], "entry": [model, image_key[:2], image_key + ".f32"]}
        return decoy.joinpath(*parts.get(level, [model, image_key[:2], image_key + ".f32"]))

    def _target(self, kind, level, model, image_key, path):
        other = self.models[1 - self.models.index(model)]
        if kind == "outside_folder":
            return self._decoy(model, level, image_key) if level in ("key", "shard") else self.outside / "photos"
        if kind == "outside_file":
            if level == "marker":
                shutil.copy(self.cache / fc.MARKER, self.outside / "marker-copy.json")
                return self.outside / "marker-copy.json"
            return self._decoy(model, "entry", image_key) if level == "entry" else self.outside / "notes.txt"
        if kind == "dangling":
            return self.outside / "nowhere"
        if kind == "other_key":  # the same place under the other key
            inside = path.relative_to(self.cache / model) if path.is_relative_to(self.cache / model) else "."
            return self.cache / other / inside
        if kind == "loop":
            return path.name  # a link to itself
        return "."  # its own folder: a cycle

    def plant(self, level, kind, model, image_key):
        """Plants one link; False when a link above its place makes it impossible."""
        shard = self.cache / model / image_key[:2]
        path = {
            "key": self.cache / model,
            "shard": shard,
            "entry": shard / (image_key + ".f32"),
            "temporary": shard / f".{image_key}.f32.4242.0badf00d.0.tmp",
            "marker": self.cache / fc.MARKER,
            "stray": self.cache / model / "README",
        }[level]
        above = [path.parents[i] for i in range(len(path.relative_to(self.cache).parts) - 1)]
        if any(folder.is_symlink() for folder in above) or path.is_symlink():
            return False
        for folder in reversed(above):
            folder.mkdir(exist_ok=True)
        target = self._target(kind, level, model, image_key, path)
        if path.is_dir():
            shutil.rmtree(path)
            self.links = {link: plan for link, plan in self.links.items() if not link.is_relative_to(path)}
        elif path.exists():
            path.unlink()
        os.symlink(target, path)
        if level == "temporary":
            os.utime(path, (OLD, OLD), follow_symlinks=False)  # as old as a dead process's leftover
        self.links[path] = (level, model, image_key)
        return True

    def on_write_path(self, model, image_key):
        """The planted links a store of this entry meets."""
        shard = self.cache / model / image_key[:2]
        return [path for path in (self.cache / model, shard, shard / (image_key + ".f32")) if path in self.links]


def _check_cache_tree(world):
    """Every regular file in the cache is its marker, its tag, or a valid entry in its own key's shard."""
    for relative, what in _tree(world.cache).items():
        if what[0] != "file" or relative in (fc.MARKER, fc.CACHEDIR_TAG):
            continue
        model, shard, name = relative.split(os.sep)
        magic, units, key_raw, image_raw = fc._HEADER.unpack_from(what[1])
        assert (magic, units, key_raw.hex(), image_raw.hex() + ".f32") == (fc._MAGIC, UNITS, model, name), relative
        assert name[:2] == shard, relative


def _link_situations():
    """(seed, [(level, target, which model, which image)]): every single link, then seeded mixes of 2-4."""
    single = [[plan] for plan in itertools.product(LINK_LEVELS, LINK_TARGETS, (0, 1), (3,))]
    rng = random.Random(19)
    mixed = [
        [(rng.choice(LINK_LEVELS[:4] + LINK_LEVELS[5:]), rng.choice(LINK_TARGETS), rng.randrange(2), rng.randrange(16))
         for _ in range(rng.randint(2, 4))]
        for _ in range(120)
    ]  # fmt: skip
    return list(enumerate(single + mixed))


LINK_SITUATIONS = _link_situations()
# What the property test meets, pinned: situations whose links could all be planted, caches
# that warned, and caches refused for a linked marker.
LINK_TRIED, LINK_WARNED, LINK_REFUSED = 192, 144, 24


def test_link_situations_cover_every_level_and_target():
    assert len(LINK_SITUATIONS) == 6 * 6 * 2 + 120
    planned = {(level, target) for _, plans in LINK_SITUATIONS for level, target, _, _ in plans}
    assert planned == set(itertools.product(LINK_LEVELS, LINK_TARGETS))


def test_a_link_anywhere_in_the_cache_is_never_followed_written_through_or_removed(tmp_path):
    """The property over LINK_SITUATIONS: stores, lookups and evictions of two model keys, with links planted.

    Outside the cache nothing is created, changed (contents or mtime) or deleted; every
    link is left as it was; every feature returned is the true one; a store meets a link
    exactly when one lies on its way, and then says so in one warning naming it; the cache
    holds only valid entries in their own key's shard.
    """
    tried = warned = refused = 0
    for index, plans in LINK_SITUATIONS:
        rng = random.Random(index)
        world = _LinkWorld(tmp_path / str(index), rng)
        planted = [
            world.plant(level, kind, world.models[which], world.images[image]) for level, kind, which, image in plans
        ]
        if not any(planted):
            continue
        tried += 1
        outside, links = _tree(world.outside), {path: os.readlink(path) for path in world.links}
        requests = {model: sorted(rng.sample(range(16), LINK_REQUEST)) for model in world.models}
        for model in world.models:
            lines = []
            try:
                cache = fc.FeatureCache(str(world.cache), model, UNITS, max_bytes=18 * ENTRY, log=lines.append)
            except UserError as error:
                assert world.cache / fc.MARKER in world.links, error
                assert "is a symbolic link" in str(error) and "\n" not in str(error)
                refused += 1
                continue
            request = requests[model]
            keys = [world.images[i] for i in request]
            got, _, _ = cache.get_or_compute(keys, lambda i, r=request, m=model: world.truth[m][[r[j] for j in i]])
            assert got.tobytes() == world.truth[model][request].tobytes(), (index, plans)
            features, missing = cache.lookup(world.images)
            hits = ~missing
            assert features[hits].tobytes() == world.truth[model][hits].tobytes(), (index, plans)
            in_the_way = [path for key in keys for path in world.on_write_path(model, key)]
            if in_the_way:
                assert len(lines) == 1 and "is a symbolic link" in lines[0], (index, plans, lines)
                assert any(str(path) in lines[0] for path in in_the_way), (lines, in_the_way)
                warned += 1
            else:
                assert lines == [], (index, plans, lines)
        assert _tree(world.outside) == outside, (index, plans)
        assert {path: os.readlink(path) for path in world.links} == links, (index, plans)
        _check_cache_tree(world)
    assert (tried, warned, refused) == (LINK_TRIED, LINK_WARNED, LINK_REFUSED)
