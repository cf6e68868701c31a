"""What the Prefect UI shows of a run: artifact keys, the metric table, plots, the summary, links.

Pure functions of the run's data, so they are tested without a server. The UI renders
artifacts' markdown with raw HTML sanitised away but ``data:image/...`` sources allowed, so a
plot is an SVG image inside the markdown (no file, no extra request).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from prefect_sacred.utils import redact

__all__ = [
    "MetricStats",
    "Summary",
    "artifact_key",
    "console_url",
    "load_samples",
    "metric_rows",
    "metrics_line",
    "progress_percent",
    "render_summary",
    "save_samples",
    "strip_credentials",
    "svg_plot",
]

#: Points kept per metric for its plot; beyond that every other point is dropped, so an
#: observer's memory does not grow with the run's metric history.
PLOT_POINTS = 256
_SPARK = "▁▂▃▄▅▆▇█"
_KEY_LENGTH = 120


def _slug(text: str) -> str:
    dashed = "".join(char if char.isalnum() and char.isascii() else "-" for char in text.lower())
    return re.sub(r"-+", "-", dashed).strip("-")


def artifact_key(experiment: str, run_id: Any, fallback: str, suffix: str = "") -> str:
    """A valid Prefect artifact key for one run: ``<experiment>-run-<id>[-<suffix>]``.

    Prefect keys hold lowercase letters, digits and dashes only. A run without an id (only
    notifiers observe it) is named by ``fallback``, its flow run's name.
    """
    name = _slug(experiment) or "experiment"
    run = _slug(str(run_id)) if run_id is not None else ""
    key = f"{name}-run-{run or _slug(fallback) or 'unnamed'}"
    tail = f"-{_slug(suffix)}" if suffix else ""
    return key[: _KEY_LENGTH - len(tail)].rstrip("-") + tail


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number


@dataclass
class MetricStats:
    """Latest, min, max and a bounded sample of one metric's points."""

    name: str
    latest: float | None = None
    step: Any = None
    minimum: float | None = None
    maximum: float | None = None
    points: int = 0
    #: Every ``stride``-th point as ``(step, value)``, at most 2 x PLOT_POINTS of them.
    sample: list[tuple[float, float]] = field(default_factory=list)
    stride: int = 1
    trend: str = ""

    def add(self, steps: list[Any], values: list[Any]) -> None:
        """Take in new points, in order."""
        for step, value in zip(steps, values, strict=False):
            number = _number(value)
            self.points += 1
            self.step = step
            self.latest = number
            if number is None or not math.isfinite(number):  # in the table, not in min, max, plot
                continue
            self.minimum = number if self.minimum is None else min(self.minimum, number)
            self.maximum = number if self.maximum is None else max(self.maximum, number)
            if (self.points - 1) % self.stride == 0:
                x = _number(step)
                self.sample.append((float(self.points - 1) if x is None else x, number))
                if len(self.sample) >= 2 * PLOT_POINTS:
                    self.sample = self.sample[::2]
                    self.stride *= 2
        self.trend = sparkline([value for _, value in self.sample])

    def row(self) -> dict[str, Any]:
        """The metric as a row of the table artifact (JSON values only)."""
        return {
            "metric": self.name,
            "latest": _cell(self.latest),
            "step": _cell(self.step),
            "min": _cell(self.minimum),
            "max": _cell(self.maximum),
            "points": self.points,
            "trend": self.trend,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MetricStats:
        """A metric's stats as a table artifact holds them (a run finished in another process)."""
        return cls(
            name=str(row.get("metric")),
            latest=_number(row.get("latest")),
            step=row.get("step"),
            minimum=_number(row.get("min")),
            maximum=_number(row.get("max")),
            points=int(row.get("points") or 0),
            trend=str(row.get("trend") or ""),
            stride=1 << 30,  # no sample until load_samples gives one: later points make no plot
        )


#: Points of a metric's sample kept in the table artifact's metadata (Prefect cuts each value
#: at 500 characters): what a run finished in another process draws its plot from.
SAVED_POINTS = 36


def save_samples(stats: dict[str, MetricStats]) -> dict[str, str]:
    """Each metric's sample, thinned to SAVED_POINTS, as artifact metadata (``step:value,...``)."""
    saved = {}
    for name, metric in stats.items():
        points = metric.sample
        if len(points) > SAVED_POINTS:
            points = [points[round(i * (len(points) - 1) / (SAVED_POINTS - 1))] for i in range(SAVED_POINTS)]
        saved[f"sample:{name}"] = ",".join(f"{x:.6g}:{y:.5g}" for x, y in points)
    return saved


def load_samples(stats: dict[str, MetricStats], metadata: dict[str, str] | None) -> None:
    """Give the metrics recovered from a table artifact the samples saved beside it."""
    for key, text in (metadata or {}).items():
        metric = stats.get(key.removeprefix("sample:")) if key.startswith("sample:") else None
        if metric is None:
            continue
        try:
            pairs = (pair.partition(":") for pair in text.split(","))
            metric.sample = [(float(x), float(y)) for x, _, y in pairs]
        except ValueError:  # cut by Prefect or changed by hand: no plot rather than a wrong one
            metric.sample = []
        # Later points join the sample at the density it has.
        metric.stride = max(1, metric.points // max(1, len(metric.sample)))


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return float(f"{value:.6g}")
    if value is None or isinstance(value, int | str | bool):
        return value
    return str(value)


def metric_rows(stats: dict[str, MetricStats]) -> list[dict[str, Any]]:
    """The table artifact's rows, one per metric, sorted by name."""
    return [stats[name].row() for name in sorted(stats)]


def sparkline(values: list[float], width: int = 24) -> str:
    """A text trend of ``values`` in block characters (shown in the live table)."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(_SPARK[min(7, int((value - low) / span * 7.999))] for value in values)


def progress_percent(progress: Any, stats: dict[str, MetricStats]) -> tuple[float, str] | None:
    """The run's progress in percent and as ``done/total`` from ``info["progress"]``.

    None if the run declares no progress.

    ``{"total": N}`` counts the points of the metric with the most points (one per epoch in
    the usual loop); ``{"total": N, "metric": name}`` counts that metric's points;
    ``{"total": N, "done": n}`` is explicit. Anything else declares no progress.
    """
    if not isinstance(progress, dict):
        return None
    total = _number(progress.get("total"))
    if total is None or not total > 0:
        return None
    done: float | None
    if "done" in progress:
        done = _number(progress["done"])
    elif "metric" in progress:
        metric = stats.get(str(progress["metric"]))
        done = float(metric.points) if metric else 0.0
    else:
        done = float(max((metric.points for metric in stats.values()), default=0))
    if done is None or math.isnan(done):
        return None
    percent = round(max(0.0, min(100.0, 100.0 * done / total)), 2)
    return percent, f"{done:g}/{total:g}"


def metrics_line(stats: dict[str, MetricStats], limit: int = 3) -> str:
    """The first metrics in one line, e.g. ``loss 0.12 (min 0.1, max 2.3)``, for artifact cards."""
    parts = []
    for name in sorted(stats)[:limit]:
        metric = stats[name]
        parts.append(
            f"{name} {_cell(metric.latest)} (min {_cell(metric.minimum)}, max {_cell(metric.maximum)})"
        )
    more = len(stats) - limit
    return "; ".join(parts) + (f"; {more} more" if more > 0 else "")


def svg_plot(stats: MetricStats, width: int = 360, height: int = 96) -> str | None:
    """A compact line plot of the metric as an SVG document, or None with fewer than 2 points."""
    points = stats.sample
    if len(points) < 2:
        return None
    if len(points) > PLOT_POINTS:
        points = [points[round(i * (len(points) - 1) / (PLOT_POINTS - 1))] for i in range(PLOT_POINTS)]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    left, right, top, bottom = 56, 8, 18, 18
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(x: float, y: float) -> str:
        px = left + (x - x0) / ((x1 - x0) or 1) * plot_w
        py = top + (1 - (y - y0) / ((y1 - y0) or 1)) * plot_h
        return f"{px:.1f},{py:.1f}"

    line = " ".join(at(x, y) for x, y in points)
    name = _xml(stats.name)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">'
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
        f'<text x="{left}" y="12" font-size="11" fill="#111">{name}</text>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#bbb"/>'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#bbb"/>'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" fill="#555">{_xml(_fmt(y1))}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" fill="#555">{_xml(_fmt(y0))}</text>'
        f'<text x="{left}" y="{height - 4}" fill="#555">{_xml(_fmt(x0))}</text>'
        f'<text x="{left + plot_w}" y="{height - 4}" text-anchor="end" fill="#555">{_xml(_fmt(x1))}</text>'
        f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
        "</svg>"
    )


def _fmt(number: float) -> str:
    return f"{number:.4g}"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _image(svg: str, alt: str) -> str:
    encoded = base64.b64encode(svg.encode()).decode()
    return f"![{_md(alt)}](data:image/svg+xml;base64,{encoded})"


def _md(text: str) -> str:
    return re.sub(r"([\\`*_\[\]|<>])", r"\\\1", text)


@dataclass
class Summary:
    """What the summary artifact says about a run that ended."""

    experiment: str
    run_id: Any
    status: str
    flow_run_name: str
    flow_run_url: str | None = None
    start_time: dt.datetime | None = None
    stop_time: dt.datetime | None = None
    result: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    #: ``(observer, where it stored the run)``, credentials removed.
    locations: list[tuple[str, str]] = field(default_factory=list)
    fail_trace: list[str] | None = None
    #: Only part of the metric history is here (the run ended in another process).
    partial_metrics: bool = False


def render_summary(summary: Summary, stats: dict[str, MetricStats]) -> str:
    """The summary artifact's markdown: status, duration, result, metrics and plots, config, storage."""
    run = f"run {summary.run_id}" if summary.run_id is not None else f"flow run {summary.flow_run_name}"
    flow_run = (
        f"[{_md(summary.flow_run_name)}]({summary.flow_run_url})"
        if summary.flow_run_url
        else _md(summary.flow_run_name)
    )
    lines = [
        f"# {_md(summary.experiment)} {_md(run)}: {summary.status}",
        "",
        "| | |",
        "|---|---|",
        f"| **Status** | {summary.status} |",
        f"| **Duration** | {_duration(summary.start_time, summary.stop_time)} |",
        f"| **Started** | {_time(summary.start_time)} |",
        f"| **Flow run** | {flow_run} |",
        "",
        "## Result",
        _json_block(summary.result),
    ]
    if stats:
        columns = ("metric", "latest", "min", "max", "points")  # the plots below show the trend
        lines += ["", "## Metrics", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        for row in metric_rows(stats):
            cells = [_md(str(row[key])) for key in columns]
            lines.append("| " + " | ".join(cells) + " |")
        plots = [(name, svg_plot(stats[name])) for name in sorted(stats)]
        images = [_image(svg, name) for name, svg in plots if svg is not None]
        if images:
            lines += ["", *images]
        if summary.partial_metrics:
            lines += [
                "",
                f"_The run ended in another process: plots use the {SAVED_POINTS} points per metric"
                " saved while it ran, and those after._",
            ]
    lines += ["", "## Config", _json_block(summary.config), "", "## Stored by"]
    lines += [f"- {_md(name)}: `{where}`" for name, where in summary.locations] or ["- no observer"]
    if summary.fail_trace:
        tail = "".join(summary.fail_trace).rstrip().splitlines()[-12:]
        lines += ["", "## Error", "```", redact("\n".join(tail)), "```"]
    return "\n".join(lines)


def _json_block(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=repr)
    if len(text) > 20_000:
        text = text[:20_000] + "\n..."
    return f"```json\n{text}\n```"


def _time(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "unknown"


def _duration(start: dt.datetime | None, stop: dt.datetime | None) -> str:
    if start is None or stop is None:
        return "unknown"
    seconds = max(0.0, (stop - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


_REDACTED_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)\S*?:\*\*\*@")


def strip_credentials(url: str) -> str:
    """``url`` without user and password (secret query values hidden), for a link people see."""
    # redact() knows every userinfo form drivers accept and leaves ``user:***@``: drop that.
    return _REDACTED_USERINFO.sub(r"\g<scheme>", redact(url))


def console_url(observer: Any, location: str) -> str | None:
    """A web page showing a run stored in S3 or Google Cloud Storage, if there is one.

    AWS's and Google's consoles for the real services; for another endpoint (MinIO, an
    emulator) the object listing URL of that endpoint.
    """
    match = re.match(r"^(s3|gs)://([^/]+)/?(.*)$", location)
    if not match:
        return None
    scheme, bucket, key = match.groups()
    inner = getattr(observer, "_covered_observer", observer)
    endpoint = getattr(inner, "endpoint_url", None)
    prefix = key.rstrip("/") + "/"
    if endpoint:
        base = strip_credentials(str(endpoint)).rstrip("/")
        if scheme == "s3":
            return f"{base}/{quote(bucket)}?prefix={quote(prefix)}"
        return f"{base}/storage/v1/b/{quote(bucket)}/o?prefix={quote(prefix)}"
    if scheme == "s3":
        region = getattr(inner, "region", None)
        region_query = f"region={quote(str(region))}&" if region else ""
        return f"https://s3.console.aws.amazon.com/s3/buckets/{quote(bucket)}?{region_query}prefix={quote(prefix)}"
    return f"https://console.cloud.google.com/storage/browser/{quote(bucket)}/{quote(prefix)}"
