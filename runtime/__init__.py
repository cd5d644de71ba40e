"""Shared training runtime: session config, checkpoints, the training loop."""
