"""PrefectArtifactsObserver: a run's progress, metrics, summary and records in the Prefect UI.

It is an observer like the others, so it receives the run's events the way every observer
does (the heartbeat's metrics and info, the final event), in the process that records them:
the run's own, or the serve process or worker that records a cancelled or killed run.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

from prefect_sacred.observers.base import ObserverLike, OutputDelta, RunObserver, resumed_run
from prefect_sacred.observers.prefect_ui.render import (
    MetricStats,
    Summary,
    artifact_key,
    console_url,
    load_samples,
    metric_rows,
    metrics_line,
    progress_percent,
    render_summary,
    save_samples,
    strip_credentials,
)
from prefect_sacred.prefect_client import close_client, open_client
from prefect_sacred.utils import redact

__all__ = ["PREFECT_UI_ENV_VAR", "PrefectArtifactsObserver", "rebuild_with_prefect_ui", "with_prefect_ui"]

logger = logging.getLogger("prefect_sacred")

#: ``PREFECT_SACRED_UI=off`` leaves runs without Prefect artifacts.
PREFECT_UI_ENV_VAR = "PREFECT_SACRED_UI"
#: Called after every other observer, so it learns the run's id and where each stored it.
LAST_PRIORITY = -1_000_000
#: Seconds without live updates after one failed.
_BACKOFF = 10.0


class PrefectArtifactsObserver(RunObserver):
    """Shows a run in the Prefect UI, as artifacts of its flow run.

    While the run runs, each beat updates at most one artifact, one API call: a table of the
    latest, min and max of each metric (key ``<experiment>-run-<id>-metrics``) and, when the
    run declares a total in ``_run.info["progress"]`` (see below), a progress bar. When it
    ends, however it ends: the summary (key ``<experiment>-run-<id>``: status, duration,
    result, metrics with a plot of each, config, where each observer stored it), the final
    metric table, and a link artifact per observer record.

    Every run gets one (after the other observers, which it lists) unless it is unobserved or
    ``PREFECT_SACRED_UI=off``. Prefect being slow or away never fails a run: the first beat
    that cannot reach it logs one warning, and beats try again after 10 s; the end raises, so
    the delivery can retry it (the parts already published are not published twice).

    Progress: set ``_run.info["progress"] = {"total": epochs}`` and it counts the points of
    the metric with most points; add ``"metric": name`` to count that one, or give
    ``"done": n`` yourself.

    Args:
        peers: The run's other observers, whose records are linked.
        min_interval: Seconds between two live updates at least (beats may be more frequent).
        timeout: Seconds each call to the Prefect API may take (default
            ``PREFECT_SACRED_API_TIMEOUT``, else 10).
        priority: Observers are called in descending priority; this one goes last.
    """

    def __init__(
        self,
        peers: Iterable[ObserverLike] = (),
        *,
        min_interval: float = 1.0,
        timeout: float | None = None,
        priority: int = LAST_PRIORITY,
    ) -> None:
        self.peers = list(peers)
        self.min_interval = min_interval
        self.timeout = timeout
        self.priority = priority
        self._reset(None, "", None, "", None, {})

    def _reset(
        self,
        flow_run_id: str | None,
        experiment: str,
        run_id: Any,
        flow_run_name: str,
        start_time: dt.datetime | None,
        config: dict[str, Any],
    ) -> None:
        """Per-run state, assigned afresh (a busy instance is shallow-copied for a new run)."""
        if getattr(self, "_api", None) is not None:
            self._close()
        self.flow_run_id = flow_run_id
        self.experiment = experiment
        self.run_id = run_id
        self.flow_run_name = flow_run_name
        self.flow_run_url: str | None = None
        self.start_time = start_time
        self.config = config
        self.stats: dict[str, MetricStats] = {}
        self.progress: float | None = None
        self.progress_text = ""
        self.result: Any = None
        self.table_id: UUID | None = None
        self.progress_id: UUID | None = None
        self.partial_metrics = False
        self._dirty: set[str] = set()
        self._updated: dict[str, float] = {}
        self._next_call = float("-inf")
        self._warned = False
        self._published: set[str] = set()
        self._api: Any = None
        #: API calls made for this run (the tests count them per beat).
        self.calls = 0

    # --- events ---------------------------------------------------------------------------

    def started_event(
        self,
        ex_info: dict[str, Any],
        command: str,
        host_info: dict[str, Any],
        start_time: dt.datetime,
        config: dict[str, Any],
        meta_info: dict[str, Any],
        _id: Any,
    ) -> Any:
        prefect = meta_info.get("prefect") or {}
        self._reset(
            prefect.get("flow_run_id"),
            str(ex_info.get("name") or "experiment"),
            _id,
            str(prefect.get("flow_run_name") or ""),
            start_time,
            config,
        )
        self.flow_run_url = prefect.get("ui_url")
        return None  # no API call here: the start of the run waits for started_event

    def reattach(self, _id: Any) -> bool:
        resumed = resumed_run()
        if resumed is None:
            return False
        self._reset(
            resumed.flow_run_id,
            resumed.flow_name or "experiment",
            _id,
            resumed.flow_run_name,
            resumed.start_time,
            dict(resumed.parameters),
        )
        self.flow_run_url = resumed.ui_url
        self.partial_metrics = True
        return self._take_over()

    def log_metrics(self, metrics_by_name: dict[str, dict[str, list[Any]]], info: dict[str, Any]) -> None:
        for name, series in metrics_by_name.items():
            steps, values = list(series.get("steps", [])), list(series.get("values", []))
            if values:
                self.stats.setdefault(name, MetricStats(name)).add(steps, values)
                self._dirty.add("table")

    def heartbeat_event(
        self,
        info: dict[str, Any],
        captured_out: str,
        beat_time: dt.datetime,
        result: Any,
        output_delta: OutputDelta | None = None,
    ) -> None:
        self.result = result
        progress = progress_percent(info.get("progress"), self.stats)
        if progress is not None and progress[0] != self.progress:
            self.progress, self.progress_text = progress
            self._dirty.add("progress")
        self._publish_live()

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        self.result = result
        self._finish("COMPLETED", stop_time, None)

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        self._finish(status, interrupt_time, None)

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        self._finish("FAILED", fail_time, fail_trace)

    # --- while the run runs -----------------------------------------------------------------

    def _publish_live(self) -> None:
        """Update the stalest changed artifact: one API call per beat at most."""
        now = time.monotonic()
        if self.flow_run_id is None or not self._dirty or now < self._next_call:
            return
        # The table first, then whichever was updated longest ago.
        part = min(self._dirty, key=lambda name: (self._updated.get(name, float("-inf")), name != "table"))
        self._next_call = now + self.min_interval
        try:
            self._send_table() if part == "table" else self._send_progress()
        except Exception as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            logger.log(level, "cannot update run %s in the Prefect UI: %s", self.run_id, _describe(exc))
            self._next_call = now + max(self.min_interval, _BACKOFF)  # spare a struggling server
            return
        self._dirty.discard(part)
        self._updated[part] = now

    # The UI's artifact cards show only the description: it says what the artifact holds.

    def _send_table(self) -> None:
        rows = metric_rows(self.stats)
        description = f"{self._title()}: {metrics_line(self.stats)}"
        samples = save_samples(self.stats)  # the plots of a run finished in another process
        if self.table_id is None:
            self.table_id = self._create("table", rows, self._key("metrics"), description, samples)
        else:
            self._update(self.table_id, rows, description, samples)

    def _send_progress(self) -> None:
        if self.progress is None:
            return
        description = f"{self._title()}: {self.progress_text} ({self.progress:g}%)"
        if self.progress_id is None:
            self.progress_id = self._create("progress", self.progress, None, description)
        else:
            self._update(self.progress_id, self.progress, description, None)

    # --- the end ----------------------------------------------------------------------------

    def _finish(self, status: str, when: dt.datetime, fail_trace: list[str] | None) -> None:
        """Publish what is left of the run's artifacts; raise if some could not be (retryable)."""
        if self.flow_run_id is None:
            return
        failures: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            ("table", self._send_table if self.stats else _nothing),
            ("progress", self._send_progress if "progress" in self._dirty else _nothing),
            ("summary", functools.partial(self._send_summary, status, when, fail_trace)),
        ]
        for name, location, target in self._links():
            steps.append((f"link:{name}", functools.partial(self._send_link, name, location, target)))
        for part, send in steps:
            if part in self._published:
                continue  # a retried end does not publish twice
            try:
                send()
            except Exception as exc:
                failures.append(f"{part}: {_describe(exc)}")
                continue
            self._published.add(part)
        self._close()
        if failures:
            raise RuntimeError(f"Prefect artifacts of run {self.run_id} not published: {'; '.join(failures)}")

    def _send_summary(self, status: str, when: dt.datetime, fail_trace: list[str] | None) -> None:
        summary = Summary(
            experiment=self.experiment,
            run_id=self.run_id,
            status=status,
            flow_run_name=self.flow_run_name,
            flow_run_url=self.flow_run_url,
            start_time=self.start_time,
            stop_time=when,
            result=self.result,
            config=self.config,
            locations=[(name, location) for name, location, _ in self._links()],
            fail_trace=fail_trace,
            partial_metrics=self.partial_metrics,
        )
        markdown = render_summary(summary, self.stats)
        headline = f"{self._title()}: {status}" + (f", {metrics_line(self.stats, 1)}" if self.stats else "")
        self._create("markdown", markdown, self._key(), headline)

    def _send_link(self, name: str, location: str, target: str) -> None:
        text = re.sub(r"([\\\[\]])", r"\\\1", location)
        self._create("markdown", f"[{text}]({target})", None, f"{name}: {location}")

    def _links(self) -> list[tuple[str, str, str]]:
        """``(observer, location, link target)`` per observer record (credentials removed)."""
        found = []
        for peer in self.peers:
            describe = getattr(peer, "run_location", None)
            try:
                location = describe() if callable(describe) else None
            except Exception:
                location = None
            if not location:
                continue
            location = str(location)
            if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
                shown = strip_credentials(location)
                target = console_url(peer, shown) or shown
            else:  # a local path: made absolute, as the process recording the run sees it
                path, _, fragment = location.partition("#")
                shown = os.path.abspath(path) + (f"#{fragment}" if fragment else "")
                target = "file://" + os.path.abspath(path)
            # A wrapper (QueueObserver) is named by the observer it wraps: that one stored the run.
            found.append((type(getattr(peer, "_covered_observer", peer)).__name__, shown, target))
        return found

    def _take_over(self) -> bool:
        """Take over the live artifacts the run's own process published (the history is there).

        False when that process published the summary already: the run's end is recorded (a
        cancellation arriving just after the run completed must not overwrite it).
        """
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        try:
            self.calls += 1
            found = self._client().read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(self.flow_run_id))])
                )
            )
        except Exception as exc:
            logger.warning("cannot read the metrics of run %s from Prefect: %s", self.run_id, _describe(exc))
            return True
        table_key, summary_key = self._key("metrics"), self._key()
        if any(artifact.key == summary_key for artifact in found):
            return False
        for artifact in found:
            if artifact.type == "table" and artifact.key == table_key and isinstance(artifact.data, list):
                self.table_id = artifact.id
                self.stats = {str(row.get("metric")): MetricStats.from_row(row) for row in artifact.data}
                load_samples(self.stats, artifact.metadata_)
            elif artifact.type == "progress":
                self.progress_id = artifact.id
        return True

    # --- the Prefect API ----------------------------------------------------------------------

    def _title(self) -> str:
        return f"{self.experiment} run {self.run_id if self.run_id is not None else self.flow_run_name}"

    def _key(self, suffix: str = "") -> str:
        return artifact_key(self.experiment, self.run_id, self.flow_run_name, suffix)

    def _client(self) -> Any:
        """This run's client, opened at its first call."""
        if self._api is None:
            self._api = open_client(self.timeout)
        return self._api

    def _close(self) -> None:
        client, self._api = self._api, None
        close_client(client)

    def _create(
        self, kind: str, data: Any, key: str | None, description: str, metadata: dict[str, str] | None = None
    ) -> UUID:
        from prefect.client.schemas.actions import ArtifactCreate

        artifact = ArtifactCreate(
            type=kind,
            key=key,
            data=data,
            description=description,
            metadata_=metadata,
            flow_run_id=UUID(str(self.flow_run_id)),
        )
        self.calls += 1
        created: UUID = self._client().create_artifact(artifact).id
        return created

    def _update(
        self, artifact_id: UUID, data: Any, description: str, metadata: dict[str, str] | None
    ) -> None:
        # The PATCH itself: the client's update_artifact also emits an event, 5x the cost.
        self.calls += 1
        body: dict[str, Any] = {"data": data, "description": description}
        if metadata is not None:
            body["metadata_"] = metadata
        self._client().request("PATCH", "/artifacts/{id}", json=body, path_params={"id": artifact_id})

    def join(self) -> None:
        self._close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_api": None}  # a client does not travel to another process


def _nothing() -> None:
    return None


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


def prefect_ui_enabled() -> bool:
    """Whether runs publish Prefect artifacts (``PREFECT_SACRED_UI`` not off)."""
    return os.environ.get(PREFECT_UI_ENV_VAR, "").strip().lower() not in {"0", "off", "false", "no"}


def with_prefect_ui(observers: Sequence[ObserverLike], enabled: bool = True) -> list[ObserverLike]:
    """``observers`` and, last, a :class:`PrefectArtifactsObserver` linking their records.

    Nothing is added when ``enabled`` is false, when ``PREFECT_SACRED_UI`` is off, or when the
    user added one already.
    """
    observers = list(observers)
    if not enabled or not prefect_ui_enabled():
        return observers
    if any(isinstance(observer, PrefectArtifactsObserver) for observer in observers):
        return observers
    return [*observers, PrefectArtifactsObserver(observers)]


def rebuild_with_prefect_ui(build: Callable[[], list[ObserverLike]]) -> Callable[[], list[ObserverLike]]:
    """A callable giving ``build()``'s observers with the Prefect UI's, which pickles with the
    flow (for ends recorded in the serve process or a worker)."""
    return functools.partial(_rebuilt_with_prefect_ui, build)


def _rebuilt_with_prefect_ui(build: Callable[[], list[ObserverLike]]) -> list[ObserverLike]:
    return with_prefect_ui(build())
