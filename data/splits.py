"""Seeded splits of a training pool: a validation set and a balanced labelled subset."""

import numpy as np

from runtime.errors import UserError


def split_train(labels, validation_size, labels_per_class, seed, num_classes=10, class_names=None):
    """Carves a validation set out of the training pool, then a balanced labelled subset.

    Both depend only on (labels, sizes, seed): every training mode run with one seed
    sees the same examples, and the test set is never touched.

    Args:
      labels: int array [N] of the training pool's labels.
      validation_size: examples held out for model selection (0 for none).
      labels_per_class: labelled examples kept per class; None keeps all that remain.
      seed: the run's seed.
      num_classes: number of classes.
      class_names: their names, for messages (default: their numbers).

    Returns:
      (train_indices, validation_indices), int64 arrays into the pool; the training
      indices are sorted by nothing in particular (a seeded shuffle).

    Raises:
      UserError: when the pool is too small for the request.
    """
    labels = np.asarray(labels)
    if not 0 <= validation_size < len(labels):
        raise UserError(
            f"--validation-size must be in [0, {len(labels) - 1}] for {len(labels)} training examples, got "
            f"{validation_size}"
        )
    rng = np.random.default_rng([seed, 7919])
    order = rng.permutation(len(labels))
    # Interleave the classes (each example ranked within its class, in shuffled order)
    # so that the validation set is as balanced as the pool allows and every class keeps
    # its fair share for the labelled subset.
    rank = np.empty(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        members = order[labels[order] == digit]
        rank[members] = np.arange(len(members))
    order = order[np.argsort(rank[order], kind="stable")]
    validation, rest = order[:validation_size], order[validation_size:]
    if labels_per_class is None:
        return rng.permutation(rest).astype(np.int64), np.sort(validation).astype(np.int64)
    chosen = []
    for digit in range(num_classes):
        of_class = rest[labels[rest] == digit]
        if labels_per_class > len(of_class):
            raise UserError(
                f"--labels-per-class {labels_per_class} is more than the data holds: class "
                f"{digit if class_names is None else repr(class_names[digit])} has "
                f"{len(of_class)} training examples left after the validation split"
            )
        chosen.append(of_class[:labels_per_class])
    return rng.permutation(np.concatenate(chosen)).astype(np.int64), np.sort(validation).astype(np.int64)
