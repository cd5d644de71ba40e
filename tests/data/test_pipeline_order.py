"""The per-epoch index order is generated lazily and stays exactly the eager order."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf

from data import pipeline


def eager_stream(num, batch, seed, start, total):
    """The order as it was computed before it became lazy: every epoch, concatenated, then cut."""
    steps = num // batch
    epochs = range(start // steps, (total - 1) // steps + 1) if total > start else []
    whole = np.concatenate(
        [np.random.default_rng([seed, e]).permutation(num)[: steps * batch] for e in epochs] or [np.zeros(0, np.int64)]
    )
    offset = (start - (start // steps) * steps) * batch
    return whole[offset : offset + (total - start) * batch].astype(np.int64)


@pytest.mark.parametrize(
    "num, batch, seed, start, total",
    [
        (23, 4, 3, 0, 17),
        (23, 4, 3, 5, 17),
        (23, 4, 3, 6, 6),
        (100, 10, 0, 9, 31),
        (7, 7, 5, 2, 9),
        (1000, 64, 11, 14, 15),
    ],
)
def test_lazy_stream_is_the_eager_order(num, batch, seed, start, total):
    stream = pipeline.index_stream(num, batch, seed, start, total)
    expected = eager_stream(num, batch, seed, start, total)
    assert len(stream) == len(expected) and stream.shape == expected.shape and stream.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(stream), expected)
    # Chunks are epochs: together they are the stream, and none crosses an epoch boundary.
    chunks = [stream.chunk(i) for i in range(stream.num_chunks)]
    np.testing.assert_array_equal(np.concatenate(chunks) if chunks else np.zeros(0, np.int64), expected)
    assert all(len(c) % batch == 0 and 0 < len(c) <= (num // batch) * batch for c in chunks)
    # Any slice and any single index agree with the eager array.
    rng = np.random.default_rng(0)
    for _ in range(20):
        lo, hi = sorted(rng.integers(0, len(expected) + 1, 2))
        np.testing.assert_array_equal(stream[lo:hi], expected[lo:hi])
    if len(expected):
        assert stream[-1] == expected[-1] and stream[0] == expected[0]


def test_a_very_long_run_is_never_materialised():
    # 10^9 steps of 64 would be 512 GB of indices if materialised; lazily the end is one epoch away.
    num, batch, seed, total = 60_000, 64, 1, 10**9
    stream = pipeline.index_stream(num, batch, seed, 0, total)
    assert len(stream) == total * batch
    steps = num // batch
    last_epoch = (total - 1) // steps
    expected_end = np.random.default_rng([seed, last_epoch]).permutation(num)[: steps * batch]
    upto = (total - last_epoch * steps) * batch
    np.testing.assert_array_equal(stream[-batch:], expected_end[upto - batch : upto])

    with tf.Graph().as_default() as graph:
        source = pipeline.IndexBatches(batch)
        iterator = tf.compat.v1.data.make_initializable_iterator(source.dataset)
        batch_tensor = iterator.get_next()
        resumed = pipeline.index_stream(num, batch, seed, total - 3, total)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(iterator.initializer, source.feed(resumed, num))
            got = np.concatenate([sess.run(batch_tensor) for _ in range(3)])
            with pytest.raises(tf.errors.OutOfRangeError):
                sess.run(batch_tensor)
    np.testing.assert_array_equal(got, expected_end[upto - 3 * batch : upto])


def test_resumed_pipeline_serves_the_same_batches_across_epochs():
    num, batch, seed, total = 50, 6, 9, 40  # 8 steps an epoch: five epochs
    data = np.arange(num, dtype=np.float32)[:, None] * 10.0
    labels = np.arange(num) % 10
    with tf.Graph().as_default() as graph:
        batches = pipeline.IndexedBatches(batch, tf.float32, [1])
        with tf.compat.v1.Session(graph=graph) as sess:
            batches.initialize(sess, data, labels, pipeline.index_stream(num, batch, seed, 0, total))
            full = [sess.run(batches.data)[:, 0] for _ in range(total)]
            for start in (7, 8, 9, 23):
                batches.initialize(sess, data, labels, pipeline.index_stream(num, batch, seed, start, total))
                tail = [sess.run(batches.data)[:, 0] for _ in range(total - start)]
                np.testing.assert_array_equal(np.stack(tail), np.stack(full[start:]))
    expected = eager_stream(num, batch, seed, 0, total).reshape(total, batch) * 10.0
    np.testing.assert_array_equal(np.stack(full), expected)


def test_streams_that_do_not_fit_the_pipeline_are_refused():
    with tf.Graph().as_default():
        source = pipeline.IndexBatches(4)
        with pytest.raises(ValueError, match="whole batches of 4"):
            source.feed(pipeline.index_stream(20, 5, 0, 0, 3), 20)
        with pytest.raises(ValueError, match="outside 0..9"):
            source.feed(pipeline.index_stream(20, 4, 0, 0, 3), 10)
        with pytest.raises(ValueError, match="start_step"):
            pipeline.index_stream(20, 4, 0, 4, 3)
    stream = pipeline.index_stream(20, 4, 0, 0, 3)
    with pytest.raises(IndexError):
        stream[12]


def test_building_the_pipelines_writes_nothing_to_the_temporary_folder(tmp_path, monkeypatch):
    """AutoGraph would write each map function as a module to the temporary folder, removed only at a
    normal exit: a run stopped by a signal left them behind. Every map of ours is plain graph code."""
    from data.image_folder import InputSpec, batches, decoding

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    image = tmp_path / "image.png"
    image.write_bytes(tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy())
    spec = InputSpec(4, 4, 3)
    with tf.Graph().as_default():
        pipeline.IndexedBatches(2, tf.float32, [1])
        batches.FileBatches(2, spec)
        batches.make_dataset([str(image)], [0], spec, batch_size=1)
    assert decoding._decode_failures([str(image)]) == {}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["image.png"]
