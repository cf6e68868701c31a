"""The run hands observers what changed in the captured output, once, for every backend."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from prefect_sacred.core.run import Run, common_prefix_length
from prefect_sacred.observers.base import OutputDelta, RunObserver
from prefect_sacred.utils import apply_backspaces_and_linefeeds
from tests.support import InjectedOutput


class DeltaRecorder(RunObserver):
    """Rebuilds the output from deltas alone and remembers each one."""

    def __init__(self) -> None:
        self.rebuilt = ""
        self.deltas: list[OutputDelta | None] = []
        self.whole: list[str] = []

    def started_event(self, **kwargs: Any) -> Any:  # type: ignore[override]
        return 1

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        assert output_delta is not None
        self.deltas.append(output_delta)
        self.rebuilt = self.rebuilt[: output_delta.start] + output_delta.text
        self.whole.append(captured_out)


class SacredStyle(RunObserver):
    """Written for Sacred: its heartbeat_event has no output_delta parameter."""

    def __init__(self) -> None:
        self.outputs: list[str] = []

    def heartbeat_event(  # type: ignore[override]
        self, info: dict[str, Any], captured_out: str, beat_time: dt.datetime, result: Any
    ) -> None:
        self.outputs.append(captured_out)


def _run(*observers: Any, output_filter: Any = None) -> tuple[Run, InjectedOutput]:
    run = Run(
        experiment_info={"name": "delta", "base_dir": "/tmp", "sources": []},
        host_info={},
        meta_info={},
        config={},
        command="main",
        observers=list(observers),
        beat_interval=0,
        capture_mode="no",
        captured_out_filter=output_filter,
    )
    run.start()
    capture = InjectedOutput()
    run._capture = capture  # type: ignore[assignment]
    return run, capture


def test_growing_output_is_handed_over_as_appends() -> None:
    recorder, sacred = DeltaRecorder(), SacredStyle()
    run, capture = _run(recorder, sacred)
    for chunk in ("one\n", "", "two\nthree\n"):
        capture.pending = chunk
        run.beat()
    run.complete(None)
    assert [(d.start, d.text) for d in recorder.deltas if d] == [
        (0, "one\n"),
        (4, ""),
        (4, "two\nthree\n"),
        (14, ""),
    ]
    assert recorder.rebuilt == "one\ntwo\nthree\n" == recorder.whole[-1]
    assert sacred.outputs[-1] == "one\ntwo\nthree\n"  # observers without the parameter get the whole


def test_a_filter_rewriting_the_last_line_gives_a_delta_from_where_it_changed() -> None:
    recorder = DeltaRecorder()
    run, capture = _run(recorder, output_filter=apply_backspaces_and_linefeeds)
    for chunk in ("epoch 1\nprogress 10%", "\rprogress 50%", "\rprogress 100%\ndone\n"):
        capture.pending = chunk
        run.beat()
    run.complete(None)
    assert recorder.rebuilt == run.captured_out == "epoch 1\nprogress 100%\ndone\n"
    second = recorder.deltas[1]
    assert second is not None and second.start == len("epoch 1\nprogress ")  # only "50%" changed


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("", "abc", 0),
        ("abc", "abcdef", 3),
        ("abcdef", "abcxyz", 3),
        ("abc", "ab", 2),
        ("x" * 200_000 + "a", "x" * 200_000 + "b", 200_000),
    ],
)
def test_common_prefix_length(before: str, after: str, expected: int) -> None:
    assert common_prefix_length(before, after, block=1024) == expected


def test_merging_deltas_keeps_every_character() -> None:
    first, second = OutputDelta(0, "progress 10%"), OutputDelta(9, "50%\ndone\n")
    merged = first.then(second)
    assert (merged.start, merged.text) == (0, "progress 50%\ndone\n")
    assert OutputDelta(5, "abc").then(OutputDelta(2, "xy")) == OutputDelta(2, "xy")
    assert merged.appended_to(0) == merged.text and merged.appended_to(3) is None
