"""Partial restore, freezing and the restore plan."""
