"""An on-disk cache of frozen-layer features, keyed by what the features depend on.

A run whose restored layers are frozen computes the same features for the same image
every time. This cache keeps them between runs, so a second run with another head, label
budget or learning rate only computes features for images it has not seen before.

Keys. A feature vector depends on the frozen layers' values, the network that applies
them, the input size, the preprocessing and which tensor is taken, and on the image.
`model_key` hashes the first group into one hex key: the frozen variables' names, dtypes,
shapes and bytes in name order (so a checkpoint re-saved with the same values keeps its
key, and any changed byte gives a new one), the network's registry name, the input spec,
a preprocessing identifier and the tensor name. An image's key is the sha256 of its
file's bytes (`file_keys`), or of a decoded array's dtype, shape and bytes (`array_keys`,
for the in-memory IDX path). Moving or renaming files keeps their keys; two files with
the same bytes share an entry. Random distortions (augmentation) change the features,
so augmented images must not go through the cache.

Layout, under the cache directory DIR:

    DIR/cae-transfer-feature-cache.json        marker: this toolkit made DIR
    DIR/CACHEDIR.TAG                           tells backup tools to skip DIR
    DIR/<model key>/<2 hex>/<image key>.f32    one entry per image

One small file per image keeps a larger label budget cheap (only its new images are
computed and written) and lets entries be evicted one by one. An entry is an 80-byte
header (magic, units, the model key, the image key, a CRC-32 of header and payload) and
then `units` little-endian float32 values. Every read checks the size, the magic, both
keys, the units and the checksum; an entry that fails any check (corrupt,
truncated, empty, copied from another model key, written with other units) counts as a
miss, is recomputed by `get_or_compute` and overwritten, and is never returned.

Writes go to a temporary file in the entry's own folder, renamed over the entry with
`os.replace`, so an interrupted run (Ctrl-C, a kill) leaves either the old entry or the
new one, and readers in other processes never see half an entry. Entries are not
fsynced: after a power loss a damaged entry fails its checksum and is recomputed.

Bound. After a store that takes the cache over `max_bytes` (2 GiB by default) the least
recently used entries, across every model key, are deleted until it is back under 90%
of the limit; a hit refreshes an entry's mtime when it is more than an hour old (so that
a warm run does not rewrite 20,000 inodes). Entries of the current call (a `store`, or a
`get_or_compute` with its hits and earlier chunks) are never evicted; when they alone
would exceed the limit only as many as fit are written, with one warning. The cache
deletes only files named the way it names its entries (and its own temporary files more
than an hour old), in folders named the way it names them; anything else inside DIR is
neither counted nor touched.

Links. The cache makes no symbolic links and follows none below DIR: each folder is
opened relative to the one above it with O_NOFOLLOW, and entries are read, written,
replaced and deleted relative to their shard's descriptor (runtime.owned). A link where a
key folder, a shard or an entry should be reads as a miss; a store that meets one leaves
it as it is and turns stores off with one warning naming it; the size bound neither
counts, follows nor deletes one. DIR itself may be a link: that is the path the user named.

Safety. Deleting DIR, or any part of it, at any time only turns hits into misses. An
existing DIR that is not empty and lacks the marker is refused with a UserError, so a
mistyped path never puts cache files among a user's own. A cache that cannot be written
(read-only, disk full) does not stop a run: lookups keep working, the first failed
write logs one warning, and later stores are skipped. One FeatureCache object is meant
for one thread; any number of processes may share DIR.

Cost. A hit is one small file opened, read and checked: tens of microseconds. That
saves nearly all of an ImageNet backbone's time (milliseconds an image on a CPU) and
little or nothing for a frozen part about as cheap as a file read, such as the CAE's two
convolutions on 28x28 digits; `python -m bench.feature_cache --networks cae,mobilenet_v1` measures both.
A first run pays for one file creation per image on top of the computation.

Typical use:

    key = model_key(frozen_values, "mobilenet_v1", [224, 224, 3], "folder-rgb-224 v1", "features:0")
    cache = FeatureCache("feature-cache", key, units=1024)
    features, hits, misses = cache.get_or_compute(file_keys(paths), compute)  # compute(indices)
    print(cache.stats())   # feature cache: 4500 hits, 0 misses
"""

import dataclasses
import hashlib
import itertools
import json
import os
import re
import secrets
import stat
import struct
import time
import zlib

import numpy as np

from runtime import owned
from runtime.errors import DataError, UserError, disk_full_reason, one_line
from runtime.paths import shown

DEFAULT_MAX_BYTES = 2 << 30
# Images per compute_fn call in get_or_compute, each chunk stored before the next.
CHUNK = 1024
MARKER = "cae-transfer-feature-cache.json"
CACHEDIR_TAG = "CACHEDIR.TAG"
SCHEMA = 1
# Eviction stops this far under the limit, so that a run storing batch after batch does
# not rescan the whole cache after every batch once it is full.
LOW_WATER = 0.9
# A hit refreshes its entry's mtime (the LRU clock) only when the mtime is older than this.
TOUCH_AFTER_SECONDS = 3600
# A temporary file this old belongs to a process that died before renaming it.
STALE_TEMP_SECONDS = 3600

_MAGIC = b"CAEFEAT\x01"
_HEADER = struct.Struct("<8sI32s32s")  # magic, units, model key, image key; then the checksum
_CHECKSUM = struct.Struct("<I")
HEADER_BYTES = _HEADER.size + _CHECKSUM.size

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHARD = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"([0-9a-f]{64})\.f32")
_MARKER_TEMP = re.compile(r"\." + re.escape(MARKER) + r"\.[0-9]+\.[0-9a-f]{8}\.[0-9]+\.tmp")
_TEMP = re.compile(r"\.([0-9a-f]{64})\.f32\.[0-9]+\.[0-9a-f]{8}\.[0-9]+\.tmp")

_TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory is a feature cache made by cae-transfer (transfer/feature_cache.py).\n"
    "# Everything in it can be recomputed; see https://bford.info/cachedir/ for this tag.\n"
)


def _frame(hasher, data):
    # A length before each field, so that no two different field lists hash the same bytes.
    hasher.update(struct.pack("<Q", len(data)))
    hasher.update(data)


def _little_endian(value):
    array = np.ascontiguousarray(np.asarray(value))
    if array.dtype.hasobject:
        raise ValueError(f"cannot hash an array of dtype {array.dtype}: only numeric arrays have stable bytes")
    if array.dtype.byteorder == ">":
        array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<")))
    return array


def _hash_array(hasher, array):
    _frame(hasher, array.dtype.str.encode("ascii"))
    _frame(hasher, json.dumps(list(array.shape)).encode("ascii"))
    hasher.update(struct.pack("<Q", array.nbytes))
    hasher.update(array.reshape(-1).view(np.uint8))


def model_key(variables, network, input_spec, preprocessing, tensor):
    """The hex key of everything besides the image that a cached feature depends on.

    Args:
      variables: {variable name: numpy array} of the restored frozen variables (their values
        after restore, not the checkpoint file: a re-saved checkpoint keeps its key).
      network: the network's registry name, e.g. "cae" or "mobilenet_v1".
      input_spec: the input the network is fed, as JSON-serialisable data, e.g. [28, 28, 1].
      preprocessing: a string naming the preprocessing and its version; change it whenever
        the pixels reaching the network would change.
      tensor: the name of the cached tensor, e.g. "conv2/Relu:0".

    Returns:
      64 lowercase hex digits (sha256).

    Raises:
      ValueError: when a variable holds Python objects rather than numbers.
      TypeError: when input_spec is not JSON-serialisable.
    """
    hasher = hashlib.sha256()
    _frame(hasher, b"cae-transfer feature cache: model key 1")
    description = {"network": network, "input": input_spec, "preprocessing": preprocessing, "tensor": tensor}
    _frame(hasher, json.dumps(description, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    hasher.update(struct.pack("<Q", len(variables)))
    for name in sorted(variables):
        _frame(hasher, name.encode("utf-8"))
        _hash_array(hasher, _little_endian(variables[name]))
    return hasher.hexdigest()


def file_keys(paths):
    """The sha256 of each file's bytes, read in chunks, as 64 hex digits.

    Args:
      paths: image file paths.

    Returns:
      A list of hex keys, one per path, in order.

    Raises:
      DataError: naming the first file that cannot be read.
    """
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as stream:
                keys.append(hashlib.file_digest(stream, "sha256").hexdigest())
        except OSError as error:
            raise DataError(
                f"{shown(os.fspath(path))}: cannot read it for the feature cache: {one_line(error)}"
            ) from None
    return keys


def array_keys(images):
    """The sha256 of each image array's dtype, shape and bytes, as 64 hex digits.

    Args:
      images: an array [N, ...] of images (uint8 [N, 28, 28] for MNIST) or a list of arrays.

    Returns:
      A list of N hex keys.

    Raises:
      ValueError: when an image holds Python objects rather than numbers.
    """
    keys = []
    for image in images:
        hasher = hashlib.sha256()
        _frame(hasher, b"cae-transfer feature cache: image array 1")
        _hash_array(hasher, _little_endian(image))
        keys.append(hasher.hexdigest())
    return keys


def _listing(folder):
    """The entries of the folder whose descriptor is given, sorted by name; none when it cannot be listed."""
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return []  # deleted meanwhile, or unreadable


def _subfolders(parent, pattern):
    """Yields (name, descriptor) of each folder in parent named by pattern, opened for listing; links skipped."""
    for entry in _listing(parent):
        if not (pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        try:
            fd = owned.open_folder(entry.name, parent, listing=True)
        except OSError:
            continue  # deleted, or made a link, since the listing
        try:
            yield entry.name, fd
        finally:
            os.close(fd)


class _Folders:
    """The folders of one model key during one call, each opened relative to the one above.

    A link at any level is never followed (runtime.owned): reading, it is an absent folder;
    writing (create=True), it raises owned.LinkFound. Shards are visited one at a time
    (callers go through their keys in order), so a call holds at most three descriptors:
    the cache directory, the key folder and one shard.
    """

    def __init__(self, cache, create):
        self._cache = cache
        self._create = create
        self._fds = []  # root, key folder, shard: as far as they are open
        self._shard = None
        self._absent = False  # reading: the root or the key folder is not there

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Closes every descriptor; the next `shard` opens (or makes) the folders again."""
        while self._fds:
            os.close(self._fds.pop())
        self._shard = None
        self._absent = False

    def shard(self, name):
        """A descriptor of the shard name, or None when reading and it (or a level above) is absent.

        Raises:
          owned.LinkFound: when writing, for a link at any level.
          OSError: when writing and a level cannot be opened or made.
        """
        if name == self._shard:
            return self._fds[2]
        if len(self._fds) == 3:
            os.close(self._fds.pop())
        self._shard = None
        if self._absent:
            return None
        cache = self._cache
        levels = [(None, cache.directory), (cache.key, os.path.join(cache.directory, cache.key))]
        levels.append((name, os.path.join(levels[1][1], name)))
        try:
            for level in range(len(self._fds), 3):
                self._fds.append(self._open(*levels[level], self._fds[-1] if self._fds else None))
        except OSError:
            if self._create:
                raise
            self._absent = len(self._fds) < 2  # a fresh cache or a new key: one failed open, not one per image
            return None
        self._shard = name
        return self._fds[2]

    def _open(self, name, path, parent):
        if name is None:  # the directory the user named
            try:
                return owned.open_named(path)
            except FileNotFoundError:
                if not self._create:
                    raise
                # Someone deleted the whole cache: make it again, marker first, so it stays ours.
                self._cache._create_root()
                return owned.open_named(path)
        try:
            return owned.open_folder(name, parent, path=path)
        except FileNotFoundError:
            if not self._create:
                raise
            try:
                os.mkdir(name, dir_fd=parent)
            except FileExistsError:
                pass
            return owned.open_folder(name, parent, path=path)


@dataclasses.dataclass
class CacheStats:
    """Counts over the life of one FeatureCache.

    Attributes:
      hits: entries read and verified.
      misses: entries absent or invalid.
      invalid: misses whose entry existed but failed a check (corrupt, truncated, stale).
      stored: entries written.
      evicted: entries deleted to keep the size bound.
    """

    hits: int = 0
    misses: int = 0
    invalid: int = 0
    stored: int = 0
    evicted: int = 0

    def __str__(self):
        text = f"feature cache: {self.hits} hits, {self.misses} misses"
        if self.invalid:
            text += f" ({self.invalid} corrupt or stale)"
        if self.evicted:
            text += f", {self.evicted} old entries evicted"
        return text


class FeatureCache:
    """The entries of one model key in a cache directory; see the module docstring.

    Attributes:
      directory: the cache directory as given.
      key: the model key.
      units: floats per feature vector.
      max_bytes: the size bound of the whole directory.
      warnings: every warning logged, in order.
    """

    def __init__(self, directory, key, units, max_bytes=DEFAULT_MAX_BYTES, log=print):
        """Opens the cache directory, creating it (and its marker) when it does not exist.

        Args:
          directory: the cache directory.
          key: a model key from `model_key`.
          units: floats per feature vector.
          max_bytes: the size bound in bytes, over every model key in the directory.
          log: takes each warning line.

        Raises:
          UserError: when max_bytes is not a positive integer, when the path is not a
            directory, or when it is a non-empty directory this toolkit did not make.
          ValueError: when key is not 64 lowercase hex digits or units is not positive.
        """
        if not isinstance(key, str) or not _HEX64.fullmatch(key):
            raise ValueError(f"model key {key!r} is not 64 lowercase hex digits")
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive integer, not {units!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
            raise UserError(f"feature cache size limit {max_bytes!r}: give a positive number of bytes")
        self.directory = os.fspath(directory)
        self.key = key
        self.units = int(units)
        self.max_bytes = int(max_bytes)
        self.warnings = []
        self._log = log
        self._stats = CacheStats()
        self._entry_bytes = HEADER_BYTES + 4 * self.units
        self._key_raw = bytes.fromhex(key)
        self._writable = True
        self._over_capacity = False
        self._usage = None  # bytes in the directory, from the last scan plus what this object wrote since
        self._token = secrets.token_hex(4)
        self._serial = itertools.count()
        self._open_directory()

    # Opening.

    def _open_directory(self):
        where = shown(self.directory)
        try:
            with os.scandir(self.directory) as listing:
                names = {entry.name for entry in listing}
        except FileNotFoundError:
            names = None
        except NotADirectoryError:
            raise UserError(f"feature cache {where} is not a directory") from None
        except OSError as error:
            raise UserError(f"feature cache {where} cannot be listed: {one_line(error)}") from None
        # A process killed while writing the marker leaves only the marker's temporary file.
        if names is None or all(_MARKER_TEMP.fullmatch(name) for name in names):
            try:
                self._create_root()
            except OSError as error:
                self._disable(error)
            return
        if MARKER not in names:
            raise UserError(
                f"feature cache {where} is a non-empty directory without {MARKER}, so this toolkit did not make it; "
                "give a new or empty directory"
            )
        marker = os.path.join(self.directory, MARKER)
        try:
            # Not through a link (runtime.owned), and never blocking on a FIFO named like it.
            with open(os.open(marker, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), encoding="utf-8") as stream:
                payload = json.load(stream)
        except (OSError, ValueError) as error:
            reason = owned.LinkFound(marker, owned.link_target(marker)) if owned.is_link(marker) else error
            raise UserError(f"feature cache marker {shown(marker)} cannot be read: {one_line(reason)}") from None
        if not isinstance(payload, dict) or payload.get("toolkit") != "cae-transfer":
            raise UserError(f"feature cache marker {shown(marker)} was not written by cae-transfer")
        if payload.get("schema") != SCHEMA:
            raise UserError(
                f"feature cache {where} has layout schema {payload.get('schema')!r}, this toolkit reads {SCHEMA}; "
                "give another directory or delete this one"
            )

    def _create_root(self):
        """Makes the directory with its marker.

        Raises:
          OSError: when it cannot be made; the caller turns stores off with a warning.
        """
        os.makedirs(self.directory, exist_ok=True)
        marker = {"toolkit": "cae-transfer", "kind": "feature cache", "schema": SCHEMA}
        marker["layout"] = "<model key>/<first 2 hex of image key>/<image key>.f32"
        root = owned.open_named(self.directory)
        try:
            # The marker first: once anything else is in the directory, the marker is there to claim it.
            self._write_atomic(root, MARKER, (json.dumps(marker, indent=2) + "\n").encode(), self.directory)
            self._write_atomic(root, CACHEDIR_TAG, _TAG_TEXT.encode("utf-8"), self.directory)
        finally:
            os.close(root)

    def _write_atomic(self, folder, name, data, where):
        """Writes name in the folder whose descriptor is folder (at path where) through a temporary file.

        Raises:
          owned.LinkFound: when name is a symbolic link, which is left as it is.
          OSError: when the file cannot be written; nothing is left behind.
        """
        temporary = f".{name}.{os.getpid()}.{self._token}.{next(self._serial)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o644, dir_fd=folder)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            # A link is not replaced either: it is not ours to remove.
            owned.refuse_link(name, folder, os.path.join(where, name))
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            # Ctrl-C included: no half-written file stays behind.
            try:
                os.unlink(temporary, dir_fd=folder)
            except OSError:
                pass
            raise

    def _disable(self, error):
        if not self._writable:
            return
        self._writable = False
        reason = disk_full_reason(error) or one_line(error)
        self._warn(
            f"warning: feature cache {shown(self.directory)} cannot be written ({reason}); "
            "features are computed as usual but no longer stored"
        )

    def _warn(self, line):
        self.warnings.append(line)
        if self._log is not None:
            self._log(line)

    # Reading.

    def _check_image_keys(self, image_keys):
        keys = list(image_keys)
        for image_key in keys:
            if not isinstance(image_key, str) or not _HEX64.fullmatch(image_key):
                raise ValueError(f"image key {image_key!r} is not 64 lowercase hex digits")
        return keys

    def _read(self, shard, image_key, out, touch_before):
        """Fills out with the entry's features from the shard's descriptor; returns "hit", "absent" or "invalid"."""
        try:
            # Not a link (the cache writes none), and never blocking on a FIFO named like an entry.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(image_key + ".f32", flags, dir_fd=shard)
        except FileNotFoundError:
            return "absent"
        except OSError:
            return "invalid"
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != self._entry_bytes:
                return "invalid"
            data = os.read(fd, self._entry_bytes)
            if len(data) != self._entry_bytes:
                return "invalid"
            magic, units, model, image = _HEADER.unpack_from(data)
            if magic != _MAGIC or units != self.units or model != self._key_raw or image != bytes.fromhex(image_key):
                return "invalid"
            view = memoryview(data)
            checksum = zlib.crc32(view[HEADER_BYTES:], zlib.crc32(view[: _HEADER.size]))
            if _CHECKSUM.unpack_from(data, _HEADER.size)[0] != checksum:
                return "invalid"
            out[:] = np.frombuffer(data, "<f4", self.units, HEADER_BYTES)
            if info.st_mtime < touch_before:
                try:
                    os.utime(fd)
                except OSError:
                    pass  # a read-only cache still serves hits; only its LRU order goes stale
            return "hit"
        except OSError:
            return "invalid"
        finally:
            os.close(fd)

    def _lookup(self, keys):
        features = np.zeros([len(keys), self.units], np.float32)
        missing = np.ones([len(keys)], bool)
        invalid = 0
        touch_before = time.time() - TOUCH_AFTER_SECONDS
        with _Folders(self, create=False) as folders:
            for index in sorted(range(len(keys)), key=keys.__getitem__):  # shard by shard
                shard = folders.shard(keys[index][:2])
                if shard is None:
                    continue  # absent, or a link: never followed
                outcome = self._read(shard, keys[index], features[index], touch_before)
                if outcome == "hit":
                    missing[index] = False
                elif outcome == "invalid":
                    invalid += 1
        hits = int(len(keys) - missing.sum())
        self._stats.hits += hits
        self._stats.misses += len(keys) - hits
        self._stats.invalid += invalid
        return features, missing

    def lookup(self, image_keys):
        """The cached features of each image.

        Args:
          image_keys: hex keys from `file_keys` or `array_keys`.

        Returns:
          (features, missing): float32 [N, units] with zeros where an entry is missing or
          invalid, and bool [N], True there.

        Raises:
          ValueError: when an image key is not 64 lowercase hex digits.
        """
        return self._lookup(self._check_image_keys(image_keys))

    # Writing.

    def _entry_bytes_for(self, image_key, vector):
        header = _HEADER.pack(_MAGIC, self.units, self._key_raw, bytes.fromhex(image_key))
        payload = vector.tobytes()
        return header + _CHECKSUM.pack(zlib.crc32(payload, zlib.crc32(header))) + payload

    def _write_entry(self, folders, image_key, vector):
        data = self._entry_bytes_for(image_key, vector)
        name, where = image_key + ".f32", os.path.join(self.directory, self.key, image_key[:2])
        try:
            self._write_atomic(folders.shard(image_key[:2]), name, data, where)
        except FileNotFoundError:
            # The shard (or all of the cache) was deleted since this call opened it: made again.
            folders.close()
            self._write_atomic(folders.shard(image_key[:2]), name, data, where)

    def _store(self, keys, features, protected=frozenset()):
        """Writes the entries of keys; protected are this call's other entries, kept from eviction too."""
        features = np.asarray(features)
        if features.shape != (len(keys), self.units):
            raise ValueError(f"features of shape {list(features.shape)} for {len(keys)} keys of {self.units} units")
        if not np.issubdtype(features.dtype, np.floating):
            raise ValueError(f"features of dtype {features.dtype}: give floats")
        if not self._writable or not keys:
            return 0
        features = np.ascontiguousarray(features, "<f4")
        unique = dict(zip(keys, range(len(keys))))  # a repeated key is written once, with its last row
        protected = set(protected) - set(unique)
        capacity = max(self.max_bytes // self._entry_bytes - len(protected), 0)
        if len(unique) > capacity:
            if not self._over_capacity:
                self._over_capacity = True
                self._warn(
                    f"warning: feature cache limit of {self.max_bytes} bytes holds "
                    f"{self.max_bytes // self._entry_bytes} entries of {self.units} floats, fewer than this call's "
                    f"{len(unique) + len(protected)}; the rest are computed but not cached"
                )
            unique = dict(itertools.islice(unique.items(), capacity))
        written = 0
        try:
            with _Folders(self, create=True) as folders:
                for image_key in sorted(unique):  # shard by shard
                    self._write_entry(folders, image_key, features[unique[image_key]])
                    written += 1
        except OSError as error:  # a link met on the way (owned.LinkFound) included
            self._disable(error)
        self._stats.stored += written
        if written:
            if self._usage is None:
                self._usage = self._scan_usage()
            else:
                self._usage += written * self._entry_bytes
            if self._usage > self.max_bytes:
                self._evict(set(unique) | protected)
        return written

    def store(self, image_keys, features):
        """Writes (or overwrites) the entries of these images, then keeps the size bound.

        Args:
          image_keys: hex keys from `file_keys` or `array_keys`.
          features: floats [N, units], one row per key.

        Returns:
          How many entries were written: 0 once the cache proved unwritable.

        Raises:
          ValueError: for a malformed key or features of the wrong shape.
        """
        return self._store(self._check_image_keys(image_keys), features)

    def get_or_compute(self, image_keys, compute_fn, chunk_size=CHUNK):
        """Cached features where valid; compute_fn for the rest, which are stored chunk by chunk.

        Each chunk's features are stored before the next chunk is computed, so a run
        interrupted halfway through a long computation keeps the chunks it finished.

        Args:
          image_keys: hex keys from `file_keys` or `array_keys`.
          compute_fn: takes an int64 array of indices into image_keys (missing ones,
            ascending, at most chunk_size of them) and returns their features, floats
            [len(indices), units]. It is not called when every image is a hit.
          chunk_size: the most indices per compute_fn call.

        Returns:
          (features, hits, misses): float32 [N, units] and this call's counts.

        Raises:
          ValueError: for a malformed key, or when compute_fn returns the wrong shape.
        """
        keys = self._check_image_keys(image_keys)
        features, missing = self._lookup(keys)
        indices = np.flatnonzero(missing)
        protected = {keys[i] for i in np.flatnonzero(~missing)}
        for start in range(0, len(indices), max(1, int(chunk_size))):
            chunk = indices[start : start + max(1, int(chunk_size))]
            computed = np.asarray(compute_fn(chunk))
            if computed.shape != (len(chunk), self.units):
                raise ValueError(
                    f"compute_fn returned shape {list(computed.shape)} for {len(chunk)} images of {self.units} units"
                )
            features[chunk] = computed
            chunk_keys = [keys[i] for i in chunk]
            self._store(chunk_keys, computed, protected=protected)
            protected.update(chunk_keys)
        return features, len(keys) - len(indices), len(indices)

    # The size bound.

    def _scan(self):
        """Every file this cache wrote: (key, shard, name, size, mtime, image key or None for a temporary).

        Each folder is opened relative to the one above without following a link
        (runtime.owned): a link anywhere in the cache is neither counted, followed nor deleted.
        """
        found = []
        try:
            root = owned.open_named(self.directory, listing=True)
        except OSError:
            return found  # deleted meanwhile, or unreadable: nothing of it is counted or removed
        try:
            for key, key_fd in _subfolders(root, _HEX64):
                for shard, shard_fd in _subfolders(key_fd, _SHARD):
                    for entry in _listing(shard_fd):
                        match = _ENTRY.fullmatch(entry.name) or _TEMP.fullmatch(entry.name)
                        if not match or match.group(1)[:2] != shard:
                            continue
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if stat.S_ISREG(info.st_mode):
                            image_key = match.group(1) if match.re is _ENTRY else None
                            found.append((key, shard, entry.name, info.st_size, info.st_mtime, image_key))
        finally:
            os.close(root)
        return found

    def _scan_usage(self):
        return sum(found[3] for found in self._scan())

    def _evict(self, protected):
        """Deletes least recently used entries (never the protected ones of this key) to under LOW_WATER."""
        found = self._scan()
        usage = sum(size for _, _, _, size, _, _ in found)
        target = int(self.max_bytes * LOW_WATER)
        now = time.time()
        candidates = []
        for key, shard, name, size, mtime, image_key in found:
            if image_key is None:
                if now - mtime > STALE_TEMP_SECONDS:
                    candidates.append((-1.0, key, shard, name, size, False))  # a dead process's leftover goes first
            elif not (key == self.key and image_key in protected):
                candidates.append((mtime, key, shard, name, size, True))
        candidates.sort()
        victims, left = {}, usage
        for _, key, shard, name, size, is_entry in candidates:
            if left <= target:
                break
            victims.setdefault((key, shard), []).append((name, size, is_entry))
            left -= size
        try:
            self._delete(victims, usage)
        except OSError as error:
            self._disable(error)
        usage = self._usage
        if usage > self.max_bytes and self._writable:
            self._warn(
                f"warning: feature cache {shown(self.directory)} still holds {usage} bytes, over its limit of "
                f"{self.max_bytes}: the rest belongs to the current call"
            )

    def _delete(self, victims, usage):
        """Deletes {(key, shard): [(name, size, is_entry)]}, then the folders that emptied.

        Sets self._usage to usage less what is gone, also when it raises.

        Raises:
          OSError: when a file cannot be deleted.
        """
        self._usage = usage
        try:
            root = owned.open_named(self.directory)
        except FileNotFoundError:
            self._usage = 0  # another process deleted all of it
            return
        try:
            for (key, shard), names in sorted(victims.items()):
                try:
                    key_fd = owned.open_folder(key, root)
                    try:
                        shard_fd = owned.open_folder(shard, key_fd)
                    except BaseException:
                        os.close(key_fd)
                        raise
                except FileNotFoundError:
                    self._usage -= sum(size for _, size, _ in names)  # another process deleted the folder
                    continue
                except OSError:
                    continue  # made a link since the scan (never followed), or unreadable
                try:
                    try:
                        for name, size, is_entry in names:
                            try:
                                os.unlink(name, dir_fd=shard_fd)
                            except FileNotFoundError:
                                pass  # another process evicted it first
                            self._usage -= size
                            self._stats.evicted += is_entry
                    finally:
                        os.close(shard_fd)
                    # rmdir removes only empty folders (and never a link), so nothing that is not ours goes with them.
                    for name, parent in ((shard, key_fd), (key, root)):
                        try:
                            os.rmdir(name, dir_fd=parent)
                        except OSError:
                            break
                finally:
                    os.close(key_fd)
        finally:
            os.close(root)

    def stats(self):
        """Counts so far, as CacheStats; str() of it is a line for the run's log."""
        return dataclasses.replace(self._stats)
