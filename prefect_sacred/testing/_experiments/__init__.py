"""Experiment scripts the contract suite runs in subprocesses (by path, with its own cwd)."""
