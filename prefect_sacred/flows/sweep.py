"""The parent flow of a sweep: ends the trials it leaves behind and summarises them.

Calling, submitting or mapping an experiment task inside a flow attaches a :class:`SweepHook`
to that flow's completion, failure, crash and cancellation hooks (once). When the flow ends:

- trials still live in this process (a second Ctrl-C while the task runner waited for them)
  are recorded ``INTERRUPTED`` (the flow was cancelled or interrupted) or ``FAILED``;
- trials left ``RUNNING`` in Prefect by a process that died (a Dask worker killed mid-trial,
  the flow-run process of a cancelled served run) are finished from their journals on this
  machine: their last points and output, then ``FAILED`` with the cause (``INTERRUPTED`` when
  the flow was cancelled);
- a markdown artifact on the flow run lists its trials: task run, run id, status, the config
  each was given and its final metrics.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from prefect_sacred._prefect_api import close_client, open_client
from prefect_sacred.flows.tasks import TrialLifecycle, TrialRun, trial_key
from prefect_sacred.journal.journal import RunJournal
from prefect_sacred.journal.sync import sync_journal
from prefect_sacred.serialization import flatten

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from prefect import Flow, Task
    from prefect.client.schemas.objects import FlowRun, State, TaskRun

    from prefect_sacred.journal.sync import SyncReport

__all__ = ["SweepHook", "publish_trial", "row_of", "summary_markdown", "watch_parent"]

logger = logging.getLogger("prefect_sacred")
#: Seconds a call to the Prefect API may take from the parent's hook.
_TIMEOUT = 10.0
#: Seconds to wait for a trial's process to let go of its journal.
_JOURNAL_WAIT = 5.0
#: The metadata key of a trial's artifact holding its summary row (JSON).
_ROW_KEY = "prefect_sacred_trial"
_HOOK_KINDS = ("on_completion_hooks", "on_failure_hooks", "on_crashed_hooks", "on_cancellation_hooks")


def watch_parent(task: Task[Any, Any], lifecycle: TrialLifecycle) -> None:
    """Attach the sweep's hook to the flow running in this context (nothing outside a flow)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow is None or context.flow_run is None:
        return
    with lifecycle.lock:
        lifecycle.parents.add(context.flow_run.id)
    hook = SweepHook(lifecycle, task.name)
    for kind in _HOOK_KINDS:
        hooks = getattr(context.flow, kind)
        if hook not in hooks:
            hooks.append(hook)


class SweepHook:
    """A flow hook ending one experiment task's trials with their parent flow run.

    Named ``flow, flow_run, state`` because runner-side hooks are called by keyword.
    """

    def __init__(self, lifecycle: TrialLifecycle, task_name: str) -> None:
        self.lifecycle = lifecycle
        self.task_name = task_name
        self.__name__ = f"prefect_sacred_sweep[{task_name}]"  # how Prefect names it in its logs

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SweepHook)
            and other.lifecycle is self.lifecycle
            and other.task_name == self.task_name
        )

    def __hash__(self) -> int:
        return hash((id(self.lifecycle), self.task_name))

    def __call__(self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        failed = not state.is_completed()
        status = _trial_status(state)
        cause = [f"the parent flow run {flow_run.name} ended {state.name}: {state.message}\n"]
        ended, live = self.lifecycle.take_trials(flow_run.id, end_live=failed)
        for run in live if failed else []:
            if status == "INTERRUPTED":
                run.interrupt("INTERRUPTED")
            else:
                run.fail(cause)
        rows = [*ended, *(row_of(run) for run in live)]
        known = {row["task_run_id"] for row in rows}
        try:
            elsewhere = self._trials_elsewhere(flow_run.id, known)
        except Exception as exc:  # the summary then lists what this process knows
            logger.warning("sweep %s: cannot read its task runs from Prefect: %s", self.task_name, exc)
            elsewhere = []
        published = _published_rows(flow_run.id) if elsewhere else {}
        for task_run in elsewhere:
            row, ended_here = self._finish_elsewhere(task_run, failed, status, cause)
            rows.append(row if ended_here else published.get(str(task_run.id), row))
        if rows:
            _publish(flow_run.id, self.task_name, summary_markdown(self.task_name, rows))

    def _trials_elsewhere(self, flow_run_id: UUID, known: set[str]) -> list[TaskRun]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import TaskRunSort

        client = open_client(_TIMEOUT)
        try:
            task_runs = _every_page(
                client.read_task_runs,
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.ID_DESC,
            )
        finally:
            close_client(client)
        key = trial_key(self.task_name)
        return [
            task_run for task_run in task_runs if str(task_run.id) not in known and task_run.task_key == key
        ]

    def _finish_elsewhere(
        self, task_run: TaskRun, failed: bool, status: str, cause: list[str]
    ) -> tuple[dict[str, Any], bool]:
        """A trial run by another process: ended from its journal if that process died.

        Returns its row and whether it was ended here.
        """
        state = task_run.state
        row: dict[str, Any] = {"trial": task_run.name, "id": "", "status": _status_of(state)}
        row.update(config="", metrics="")
        path = RunJournal.find(str(task_run.id))
        if not (failed and state is not None and state.is_running() and path is not None):
            return row, False
        trace = [f"the trial's process died before it ended; {cause[0]}"]
        try:
            observers = self.lifecycle.experiment._observers_for_deployment()
        except Exception:
            observers = []
        try:
            # Kept until its last metrics are read for the summary (_end_journal).
            report = sync_journal(
                path, status=status, fail_trace=trace, wait=_JOURNAL_WAIT, rebuilt=observers, delete=False
            )
        except Exception as exc:
            logger.error("trial %s: cannot deliver its journal %s: %s", task_run.name, path, exc)
            return row, False
        if report.skipped is not None:  # its process still holds it: alive after all
            return row, False
        row.update(id=report.run_id, status=status, metrics=_pairs(_end_journal(path, report)))
        for line in report.lines():
            logger.info("%s", line)
        return row, True


def _end_journal(path: str, report: SyncReport) -> dict[str, Any]:
    """The last value of each metric in a synced journal, which is then deleted if complete."""
    from prefect_sacred.journal.records import restore_value

    last: dict[str, Any] = {}
    try:
        journal = RunJournal.open(path)
    except Exception as exc:  # left on disk for `prefect-sacred sync`; the row goes without them
        logger.warning("cannot read the journal %s: %s", path, exc)
        return last
    try:
        for record in journal.records():
            if record.get("kind") == "points":
                for name, columns in record["points"].items():
                    if columns["values"]:
                        value = columns["values"][-1]
                        last[name] = restore_value(value) if isinstance(value, dict) else value
    except Exception as exc:
        logger.warning("cannot read the metrics in the journal %s: %s", path, exc)
    finally:
        if report.complete:
            journal.delete()
            report.deleted = True
        else:
            journal.close()
    return last


def publish_trial(run: TrialRun) -> None:
    """A trial that ran away from its parent's process: its summary row as a task run artifact.

    One API call per trial (best effort); the artifact also shows the trial on its task run.
    """
    import json
    from uuid import UUID

    from prefect.client.schemas.actions import ArtifactCreate

    parent, task_run_id, name = run.trial
    row = row_of(run)
    try:
        text = json.dumps(flatten(row))
        _PUBLISHERS.client().create_artifact(
            ArtifactCreate(
                type="markdown",
                data=summary_markdown(name, [row]),
                flow_run_id=UUID(parent) if parent else None,
                task_run_id=UUID(task_run_id),
                description=f"Trial {name}: run {run._id} {run.status}",
                metadata_={_ROW_KEY: text},
            )
        )
    except Exception as exc:
        logger.warning("trial %s: cannot publish its summary: %s", name, exc)


def _published_rows(flow_run_id: UUID) -> dict[str, dict[str, Any]]:
    """The rows trials in other processes published, by task run id."""
    import json

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    rows: dict[str, dict[str, Any]] = {}
    client = None
    try:
        client = open_client(_TIMEOUT)
        artifacts = _every_page(
            client.read_artifacts,
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.ID_DESC,
        )
        for artifact in artifacts:
            text = (artifact.metadata_ or {}).get(_ROW_KEY)
            if text and artifact.task_run_id is not None:
                with contextlib.suppress(ValueError):  # cut by Prefect's 500-character limit
                    rows[str(artifact.task_run_id)] = json.loads(text)
    except Exception as exc:
        logger.warning("cannot read the trials' summaries of flow run %s: %s", flow_run_id, exc)
    finally:
        close_client(client)
    return rows


class _ProcessClients:
    """One open Prefect client per process and API URL, for the trials that publish their rows.

    A Ray or Dask worker runs trial after trial: a new client for each costs it about 60 ms
    (loading CA certificates, a new connection). The clients' httpx clients are thread-safe,
    and reconnect by themselves after a broken connection. A forked child never uses, nor
    closes, its parent's (forgotten at the fork); a pickled trial does not carry them (they
    belong to this module). They are closed when the process exits.
    """

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closer_registered = False
        # A lock held by another thread at a fork would stay held in the child forever.
        os.register_at_fork(after_in_child=self._forked)

    def client(self) -> Any:
        """This process's client of the current ``PREFECT_API_URL``, opened on first use."""
        from prefect.settings import PREFECT_API_URL

        key = str(PREFECT_API_URL.value() or "")
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = open_client(_TIMEOUT)
                if not self._closer_registered:
                    self._closer_registered = True
                    atexit.register(self.close)
            return client

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._clients = {}

    def close(self) -> None:
        """Close this process's clients."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            close_client(client)


_PUBLISHERS = _ProcessClients()


def _every_page(read: Callable[..., list[Any]], **filters: Any) -> list[Any]:
    """Everything ``read`` finds, a page at a time: the server returns at most a page per call.

    The server's page size is its own setting (200 by default), so pages are read until one
    comes back empty. ``filters`` must sort by a total order (an id): the offsets stay valid.
    """
    items: dict[Any, Any] = {}
    offset = 0
    while page := read(**filters, offset=offset):
        offset += len(page)
        items.update((item.id, item) for item in page)  # a late insert can shift one over
    return list(items.values())


def _trial_status(state: State[Any]) -> str:
    """How the parent's end ends its trials: cancelled or interrupted, else failed."""
    message = state.message or ""
    if state.is_cancelled() or state.is_cancelling():
        return "INTERRUPTED"
    if state.is_crashed() and ("interrupt signal" in message or "termination signal" in message):
        return "INTERRUPTED"
    return "FAILED"


def _status_of(state: Any) -> str:
    if state is None:
        return "PENDING"
    kind = str(state.type.value)
    return {"CRASHED": "FAILED", "CANCELLED": "INTERRUPTED"}.get(kind, kind)


def row_of(run: TrialRun) -> dict[str, Any]:
    """The trial's summary row, short enough to travel as artifact metadata (500 characters)."""
    updates = run.meta_info.get("config_updates") or {}
    return {
        "trial": run.trial[2],
        "task_run_id": run.trial[1],
        "id": run._id,
        "status": run.status or "RUNNING",
        "config": _pairs(updates),
        "metrics": _pairs(run.last_metrics),
    }


def _pairs(values: dict[str, Any], limit: int = 150) -> str:
    text = ", ".join(f"{key}={_short(value)}" for key, value in sorted(values.items()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summary_markdown(task_name: str, rows: list[dict[str, Any]]) -> str:
    """The sweep's table: one row per trial, by task run name."""
    rows = sorted(rows, key=lambda row: str(row["trial"]))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    tally = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    lines = [
        f"## Sweep `{task_name}`: {len(rows)} trial{'' if len(rows) == 1 else 's'} ({tally})",
        "",
        "| trial | run id | status | config | final metrics |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            row["trial"],
            "" if row["id"] is None else row["id"],
            row["status"],
            row["config"],
            row["metrics"],
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    value = flatten(value)
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _publish(flow_run_id: UUID, task_name: str, markdown: str) -> None:
    """The summary as a markdown artifact of the parent flow run (best effort)."""
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    key = "sweep-" + (re.sub(r"[^a-z0-9-]+", "-", task_name.lower()).strip("-") or "trials")
    try:
        with get_client(httpx_settings={"timeout": _TIMEOUT}, sync_client=True) as client:
            client.create_artifact(
                ArtifactCreate(
                    key=key,
                    type="markdown",
                    data=markdown,
                    flow_run_id=flow_run_id,
                    description=f"The trials of experiment task {task_name}",
                )
            )
    except Exception as exc:
        logger.warning("sweep %s: cannot write its summary artifact: %s", task_name, exc)
