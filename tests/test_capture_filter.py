"""``apply_backspaces_and_linefeeds``: Sacred's terminal emulation for captured output."""

from __future__ import annotations

import random

import pytest

from prefect_sacred import apply_backspaces_and_linefeeds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("plain\ntext\n", "plain\ntext\n"),
        ("progress 1\rprogress 2", "progress 2"),
        ("progress 10\rprogress 9", "progress 90"),  # overwrite, not erase: like a terminal
        ("10%\r20%\r30%\ndone\n", "30%\ndone\n"),
        ("abc\bd", "abd"),
        ("abc\b\bxy", "axy"),
        ("ab\b\b\b\bX", "Xb"),  # the cursor stops at column 0
        ("\b\bstart", "start"),
        ("a\rb\nc\rd\n", "b\nd\n"),  # every line is rendered on its own
        ("a\b\nb", "a\nb"),  # a backspace never crosses a line break
        ("abc\r", "abc\r"),  # a trailing \r is kept, so the next chunk overwrites the line
        ("abc\r\n", "abc\n"),  # ...but only at the very end of the text
        ("x\r\ny\r", "x\ny\r"),
        ("one\rtwo\r", "two\r"),
        ("héllo\rwörld ✓", "wörld ✓"),
    ],
)
def test_renders_like_a_terminal(text: str, expected: str) -> None:
    assert apply_backspaces_and_linefeeds(text) == expected


def test_a_kept_trailing_carriage_return_lets_the_next_chunk_overwrite_the_line() -> None:
    first = apply_backspaces_and_linefeeds("epoch 1\rloss 0.9\r")
    assert first == "loss 0.9\r"
    # Sacred applies the filter to the whole cumulative output on every beat.
    assert apply_backspaces_and_linefeeds("epoch 1\rloss 0.9\rloss 0.5\n") == "loss 0.5\n"


def test_is_idempotent_on_its_output_without_a_trailing_carriage_return() -> None:
    text = "a\rbc\b\bd\nline\n"
    once = apply_backspaces_and_linefeeds(text)
    assert apply_backspaces_and_linefeeds(once) == once


def test_matches_sacred_0_8_7_on_random_terminal_output() -> None:
    sacred_utils = pytest.importorskip("sacred.utils")
    rng = random.Random(2024)
    alphabet = ["a", "b", "7", "é", " ", "\r", "\b", "\n"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert apply_backspaces_and_linefeeds(text) == sacred_utils.apply_backspaces_and_linefeeds(text), (
            repr(text)
        )
