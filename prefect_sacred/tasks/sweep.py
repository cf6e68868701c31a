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

import logging
from typing import TYPE_CHECKING, Any

from prefect_sacred.core.journal import RunJournal
from prefect_sacred.core.sync import sync_journal
from prefect_sacred.prefect_client import close_client, open_client
from prefect_sacred.tasks.summary import (
    every_page,
    metric_pairs,
    publish_summary,
    published_rows,
    row_of,
    status_of,
    summary_markdown,
    trial_status,
)
from prefect_sacred.tasks.trial_run import trial_key
from prefect_sacred.tasks.trials import TrialLifecycle

if TYPE_CHECKING:
    from uuid import UUID

    from prefect import Flow, Task
    from prefect.client.schemas.objects import FlowRun, State, TaskRun

    from prefect_sacred.core.sync import SyncReport

__all__ = ["SweepHook", "watch_parent"]

logger = logging.getLogger("prefect_sacred")
#: Seconds to wait for a trial's process to let go of its journal.
_JOURNAL_WAIT = 5.0
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
        status = trial_status(state)
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
        published = published_rows(flow_run.id) if elsewhere else {}
        for task_run in elsewhere:
            row, ended_here = self._finish_elsewhere(task_run, failed, status, cause)
            rows.append(row if ended_here else published.get(str(task_run.id), row))
        if rows:
            publish_summary(flow_run.id, self.task_name, summary_markdown(self.task_name, rows))

    def _trials_elsewhere(self, flow_run_id: UUID, known: set[str]) -> list[TaskRun]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import TaskRunSort

        client = open_client()
        try:
            task_runs = every_page(
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
        row: dict[str, Any] = {"trial": task_run.name, "id": "", "status": status_of(state)}
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
        row.update(id=report.run_id, status=status, metrics=metric_pairs(_end_journal(path, report)))
        for line in report.lines():
            logger.info("%s", line)
        return row, True


def _end_journal(path: str, report: SyncReport) -> dict[str, Any]:
    """The last value of each metric in a synced journal, which is then deleted if complete."""
    from prefect_sacred.core.records import restore_value

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
