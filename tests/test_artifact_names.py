"""Artifact names are checked once, by the run, the same way whichever observers record it."""

from __future__ import annotations

import pytest

from prefect_sacred.observers.base import InvalidArtifactName, check_artifact_name


@pytest.mark.parametrize(
    "name", ["", "../escape", "a/../../b", "/etc/passwd", "\\\\server\\share", "nul\0byte", "..\\up"]
)
def test_names_leaving_the_run_are_refused_with_a_clear_error(name: str) -> None:
    with pytest.raises(InvalidArtifactName, match="not a relative path inside the run"):
        check_artifact_name(name)


@pytest.mark.parametrize("name", ["model.pt", "plots/loss.png", "epoch:3.png", "..hidden", "a..b"])
def test_ordinary_names_pass(name: str) -> None:
    assert check_artifact_name(name) == name
