"""The label-budget experiment runner, on a tiny budget."""

import csv
import os

import pytest
from conftest import invoke, read_events

from experiments import label_budget

FLAGS = [
    "--sample",
    "--budgets",
    "10",
    "--seeds",
    "2",
    "--modes",
    "scratch,transfer-frozen",
    "--min-steps",
    "20",
    "--validation-size",
    "100",
]


@pytest.mark.slow
def test_runs_each_cell_writes_the_tables_and_skips_finished_cells(ae_run, tmp_path):
    out_dir = tmp_path / "experiment"
    first = invoke(label_budget.main, [*FLAGS, "--checkpoint", str(ae_run.prefix), "--out-dir", str(out_dir)])
    assert first.code == 0, first.err

    with open(out_dir / "results.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["seed"], row["mode"]) for row in rows] == [
        ("0", "scratch"),
        ("0", "transfer-frozen"),
        ("1", "scratch"),
        ("1", "transfer-frozen"),
    ]
    assert {row["num_train"] for row in rows} == {"100"}
    assert all(0.0 <= float(row["test_accuracy"]) <= 1.0 for row in rows)
    table = (out_dir / "results.md").read_text()
    assert "| 10 |" in table and "Paired difference against scratch" in table
    assert (out_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Each cell is a real transfer run; its mode shows in its restore plan.
    frozen = out_dir / "runs" / "transfer-frozen-10-seed0"
    assert "restored" in (frozen / "restore_plan.json").read_text()
    scratch_plan = (out_dir / "runs" / "scratch-10-seed0" / "restore_plan.json").read_text()
    assert '"restored"' not in scratch_plan
    # HParams: one experiment for the runs folder, a session per cell.
    tags = {value.tag for event in read_events(frozen) for value in event.summary.value}
    assert "_hparams_/session_start_info" in tags
    assert "_hparams_/experiment" in {
        value.tag for event in read_events(out_dir / "runs") for value in event.summary.value
    }

    again = invoke(label_budget.main, [*FLAGS, "--checkpoint", str(ae_run.prefix), "--out-dir", str(out_dir)])
    assert again.code == 0, again.err
    assert [line.split("test ")[1].split()[0] for line in again.out.splitlines() if line.startswith("[")] == [
        f"{float(row['test_accuracy']):.4f}" for row in rows
    ]
    assert os.path.getmtime(frozen / "metrics.json") < os.path.getmtime(out_dir / "results.csv")


def test_bad_budget_and_mode_are_one_line_errors(tmp_path):
    for flags, message in (
        (["--budgets", "10,x"], "--budgets takes positive whole numbers or 'all', got 'x'"),
        (["--modes", "scratch,nope"], "unknown mode(s) nope"),
    ):
        result = invoke(label_budget.main, [*flags, "--out-dir", str(tmp_path)])
        assert result.code == 2
        assert result.err.startswith("error: ") and message in result.err and result.err.count("\n") == 1
