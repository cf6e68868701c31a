"""What the Prefect UI's artifacts say, without a server: keys, links, progress, plots."""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

import pytest

from prefect_sacred.observers.prefect_ui.render import (
    PLOT_POINTS,
    MetricStats,
    Summary,
    artifact_key,
    console_url,
    load_samples,
    progress_percent,
    render_summary,
    save_samples,
    strip_credentials,
    svg_plot,
)


@pytest.mark.parametrize(
    ("experiment", "run_id", "expected"),
    [
        ("mnist", 7, "mnist-run-7"),
        ("My Experiment_v2", "abc/DEF", "my-experiment-v2-run-abc-def"),
        ("émoji ✓", None, "moji-run-keen-goose"),
        ("", 1, "experiment-run-1"),
    ],
)
def test_keys_are_valid_prefect_keys_per_experiment_and_run(
    experiment: str, run_id: Any, expected: str
) -> None:
    key = artifact_key(experiment, run_id, "keen-goose")
    assert key == expected
    assert re.fullmatch(r"[a-z0-9-]+", artifact_key(experiment, run_id, "x", "metrics"))


def test_a_long_key_keeps_its_suffix() -> None:
    key = artifact_key("x" * 300, 1, "", "metrics")
    assert len(key) <= 120 and key.endswith("-metrics")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mongodb://alice:s3cret@db.example:27017/sacred.runs/7", "mongodb://db.example:27017/sacred.runs/7"),
        ("postgresql://bob:***@pg:5432/runs#run=a1", "postgresql://pg:5432/runs#run=a1"),
        ("mysql+pymysql://root@127.0.0.1/db", "mysql+pymysql://root@127.0.0.1/db"),
        ("sqlite:////tmp/runs.db#run=3", "sqlite:////tmp/runs.db#run=3"),
    ],
)
def test_record_urls_lose_their_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


class _S3:
    region = "eu-west-1"
    endpoint_url = None


class _Minio:
    endpoint_url = "http://key:secret@127.0.0.1:9000"


def test_object_store_records_link_to_a_console() -> None:
    assert console_url(_S3(), "s3://bucket/runs/7") == (
        "https://s3.console.aws.amazon.com/s3/buckets/bucket?region=eu-west-1&prefix=runs/7/"
    )
    assert (
        console_url(object(), "gs://bucket/runs/7")
        == "https://console.cloud.google.com/storage/browser/bucket/runs/7/"
    )
    assert console_url(_Minio(), "s3://bucket/runs/7") == "http://127.0.0.1:9000/bucket?prefix=runs/7/"
    assert console_url(object(), "/tmp/runs/7") is None


def _stats(name: str, values: list[float]) -> MetricStats:
    stats = MetricStats(name)
    stats.add(list(range(len(values))), values)
    return stats


def test_progress_counts_the_epochs_logged_or_what_the_run_says() -> None:
    stats = {"loss": _stats("loss", [3, 2, 1]), "batch.loss": _stats("batch.loss", [1] * 30)}
    assert progress_percent({"total": 60}, stats) == (50.0, "30/60")
    assert progress_percent({"total": 10, "metric": "loss"}, stats) == (30.0, "3/10")
    assert progress_percent({"total": 4, "done": 1}, stats) == (25.0, "1/4")
    assert progress_percent({"total": 2, "done": 5}, stats) == (100.0, "5/2")
    for undeclared in (None, 0.5, {"total": 0}, {"total": "many"}, {"done": 3}):
        assert progress_percent(undeclared, stats) is None


def test_a_metric_keeps_a_bounded_sample_however_long_the_run() -> None:
    stats = MetricStats("loss")
    for start in range(0, 100_000, 1000):
        stats.add(list(range(start, start + 1000)), [float(i) for i in range(start, start + 1000)])
    assert stats.points == 100_000
    assert (stats.minimum, stats.maximum, stats.latest, stats.step) == (0.0, 99_999.0, 99_999.0, 99_999)
    assert len(stats.sample) < 2 * PLOT_POINTS
    assert stats.sample[0] == (0.0, 0.0)


def test_nan_and_bad_values_are_counted_but_not_plotted() -> None:
    stats = _stats("loss", [1.0, float("nan"), 3.0, float("inf")])
    assert (stats.points, stats.minimum, stats.maximum) == (4, 1.0, 3.0)
    assert stats.row()["latest"] == "inf"
    assert len(stats.trend) == 2 and svg_plot(stats) is not None
    assert MetricStats.from_row(stats.row()).maximum == 3.0


def test_the_plot_is_an_svg_of_the_metric() -> None:
    svg = svg_plot(_stats("loss", [4.0, 2.0, 1.0]))
    assert svg is not None and svg.startswith("<svg") and svg.count(",") >= 3
    assert svg_plot(_stats("single", [1.0])) is None


def test_the_summary_says_status_duration_result_metrics_config_and_where() -> None:
    start = dt.datetime(2026, 12, 1, 10, 0, 0)
    summary = Summary(
        experiment="mnist",
        run_id=3,
        status="FAILED",
        flow_run_name="keen-goose",
        flow_run_url="http://ui/runs/flow-run/1",
        start_time=start,
        stop_time=start + dt.timedelta(hours=1, seconds=5),
        result=None,
        config={"lr": 0.1},
        locations=[("FileStorageObserver", "/data/runs/3")],
        fail_trace=["Traceback...\n", "ValueError: mongodb://u:pw@h/x is down\n"],
    )
    text = render_summary(summary, {"loss": _stats("loss", [3.0, 2.0])})
    assert text.startswith("# mnist run 3: FAILED")
    assert "| **Duration** | 1 h 00 min 05 s |" in text
    assert "[keen-goose](http://ui/runs/flow-run/1)" in text
    assert '"lr": 0.1' in text and "- FileStorageObserver: `/data/runs/3`" in text
    assert "pw" not in text and "ValueError" in text
    [image] = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text)
    assert "<polyline" in base64.b64decode(image).decode()


def test_a_run_finished_elsewhere_plots_from_the_samples_saved_with_its_table() -> None:
    live = _stats("loss", [float(10 - i % 7) for i in range(1000)])
    saved = save_samples({"loss": live})
    assert all(len(text) <= 500 for text in saved.values())  # Prefect cuts metadata values there
    recovered = {"loss": MetricStats.from_row(live.row())}
    load_samples(recovered, saved)
    assert len(recovered["loss"].sample) == 36 and recovered["loss"].sample[0] == (0.0, 10.0)
    recovered["loss"].add([1000, 1001], [1.0, 1.0])  # the points after the last live table
    assert recovered["loss"].points == 1002 and svg_plot(recovered["loss"]) is not None


def test_every_run_gets_the_ui_observer_last_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_sacred.observers.prefect_ui import PrefectArtifactsObserver, with_prefect_ui
    from prefect_sacred.testing import InMemoryObserver

    peer = InMemoryObserver()
    [first, ui] = with_prefect_ui([peer])
    assert first is peer and isinstance(ui, PrefectArtifactsObserver) and ui.peers == [peer]
    assert ui.priority < min(0, getattr(peer, "priority", 0))  # after every other: it learns the id
    assert with_prefect_ui([peer, ui]) == [peer, ui]  # one per run
    assert with_prefect_ui([peer], enabled=False) == [peer]  # -u/--unobserved
    monkeypatch.setenv("PREFECT_SACRED_UI", "off")
    assert with_prefect_ui([peer]) == [peer]
