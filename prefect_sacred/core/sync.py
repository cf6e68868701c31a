"""Deliver what a run's journal holds to the observers that have not received it.

Used by ``prefect-sacred sync`` (after a backend came back, or for a run whose process died) and
by the hook that records the end of a served run whose process is gone. Each observer is
rebuilt from its pickle, continues the run with ``reattach(_id)``, and gets every event after
its cursor, in order; the cursor moves with each event, so running it again delivers nothing
twice. A journal without a final event (its process died) is closed first: the points and
output after the last beat become a last beat, then the end (FAILED, saying the process died,
or the status the caller knows), all appended to the journal before any is delivered.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect_sacred.core.journal import JournalLocked, RunJournal
from prefect_sacred.core.records import decode_time, encode_time, restore_points, restore_value
from prefect_sacred.observers.base import InvalidArtifactName
from prefect_sacred.observers.delivery import describe_error
from prefect_sacred.serialization import utcnow
from prefect_sacred.utils import without_leading_points

__all__ = ["FINAL_EVENTS", "ObserverOutcome", "SyncReport", "close_journal", "sync_journal"]

logger = logging.getLogger("prefect_sacred.sync")

FINAL_EVENTS = ("completed_event", "interrupted_event", "failed_event")


@dataclass
class ObserverOutcome:
    """What sync did for one observer of a run."""

    slot: int
    name: str
    delivered: int = 0
    #: Events it still has not received.
    left: int = 0
    #: Events it can never receive (an artifact file that is gone, a name it refuses).
    lost: int = 0
    #: Why not everything was delivered (None: all was).
    problem: str | None = None


@dataclass
class SyncReport:
    """What sync did for one journal."""

    path: str
    run_id: Any = None
    #: Why the journal was not touched (its process still runs), if it was not.
    skipped: str | None = None
    #: The end sync recorded for a run whose process died without one.
    ended: str | None = None
    outcomes: list[ObserverOutcome] = field(default_factory=list)
    #: Whether the journal was deleted (every observer received everything).
    deleted: bool = False

    @property
    def complete(self) -> bool:
        """Nothing is left to deliver (a skipped journal is not complete)."""
        return self.skipped is None and all(outcome.left == 0 for outcome in self.outcomes)

    def lines(self) -> list[str]:
        """The report for people, one line per observer."""
        head = f"run {self.run_id} ({self.path})"
        if self.skipped is not None:
            return [f"{head}: skipped, {self.skipped}"]
        lines = [f"{head}: {self.ended}"] if self.ended else []
        for outcome in self.outcomes:
            text = f"{head}: {outcome.name}: delivered {outcome.delivered} event(s)"
            if outcome.left:
                text += f", {outcome.left} left ({outcome.problem})"
            elif outcome.lost:
                text += f", {outcome.lost} could not be delivered ({outcome.problem})"
            elif outcome.problem:
                text += f" ({outcome.problem})"
            lines.append(text)
        if self.deleted:
            lines.append(f"{head}: everything delivered; journal removed")
        return lines


def close_journal(
    journal: RunJournal,
    records: list[dict[str, Any]],
    status: str = "FAILED",
    fail_trace: list[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Append a last beat and an end to a journal whose run never recorded its end.

    Returns:
        The records (with those appended), and a description of the end added (None when the
        run had its end already).
    """
    if any(record.get("event") in FINAL_EVENTS for record in records if record.get("kind") == "event"):
        return records, None
    identity = records[0] if records and records[0].get("kind") == "run" else {}
    info: Any = {}
    result: Any = None
    for record in records:
        if record.get("event") == "heartbeat_event":
            info, result = record.get("info", {}), record.get("result")
    now = encode_time(utcnow())
    journal.add_event("log_metrics")
    journal.add_event("heartbeat_event", info=info, beat_time=now, result=result)
    if status == "FAILED":
        trace = fail_trace or [
            f"The process of this run (pid {identity.get('pid')} on {identity.get('host')}) died without "
            "recording its end; its journal was delivered by prefect-sacred.\n"
        ]
        journal.add_event("failed_event", fail_time=now, fail_trace=trace)
        ended = "the run's process died without its end: recorded as FAILED"
    else:
        journal.add_event("interrupted_event", interrupt_time=now, status=status)
        ended = f"the run's process died without its end: recorded as {status}"
    return journal.records(), ended


def sync_journal(
    path: str,
    *,
    status: str = "FAILED",
    fail_trace: list[str] | None = None,
    wait: float = 0.0,
    delete: bool = True,
    rebuilt: list[Any] | None = None,
) -> SyncReport:
    """Deliver what the journal in ``path`` holds to every observer that has not received it.

    Args:
        path: The journal's directory.
        status: How to end a run whose process died without its end (``FAILED`` or
            ``INTERRUPTED``).
        fail_trace: The trace of such a ``FAILED`` end (default: one saying the process died).
        wait: Seconds to wait for a live process to release the journal.
        delete: Remove the journal once every observer received everything.
        rebuilt: Observers built anew (from the experiment and its settings), standing in for
            those the journal could not keep (they did not pickle), matched by class name.
    """
    report = SyncReport(path)
    try:
        journal = RunJournal.open(path, wait=wait)
    except JournalLocked:
        report.skipped = "its process is still running"
        return report
    try:
        records = journal.records()
        identity = records[0] if records and records[0].get("kind") == "run" else {}
        report.run_id = restore_value(identity.get("run_id"))
        records, report.ended = close_journal(journal, records, status, fail_trace)
        output_filter = _import_filter(identity.get("captured_out_filter"))
        last = records[-1]["seq"] if records else -1
        spare = list(rebuilt or [])
        for slot in journal.observer_slots():
            outcome = ObserverOutcome(slot["slot"], slot["name"])
            report.outcomes.append(outcome)
            cursor = journal.cursor(outcome.slot)
            if cursor >= last:
                continue
            observer: Any = None
            if not slot.get("pickled"):
                observer = _stand_in(slot["name"], spare)
                if observer is None:
                    outcome.left = _events_after(records, cursor)
                    outcome.problem = f"sync cannot rebuild this observer: {slot.get('why')}"
                    continue
            try:
                _replay(journal, records, outcome, report.run_id, output_filter, observer)
            except Exception as exc:  # a record this version cannot read: say so, keep it all
                outcome.left = _events_after(records, journal.cursor(outcome.slot))
                outcome.problem = f"the journal cannot be replayed: {describe_error(exc)}"
    finally:
        if delete and report.complete:
            journal.delete()
            report.deleted = True
        else:
            journal.close()
    return report


def _stand_in(name: str, spare: list[Any]) -> Any:
    for index, observer in enumerate(spare):
        if type(observer).__name__ == name:
            return spare.pop(index)
    return None


def _events_after(records: list[dict[str, Any]], cursor: int) -> int:
    return sum(1 for record in records if record.get("kind") == "event" and record["seq"] > cursor)


def _import_filter(path: str | None) -> Callable[[str], str] | None:
    if not path:
        return None
    module, _, name = path.partition(":")
    try:
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
    except Exception:
        logger.warning(
            "cannot import the run's captured_out_filter %s; the output is stored unfiltered", path
        )
        return None
    return target if callable(target) else None


def _replay(
    journal: RunJournal,
    records: list[dict[str, Any]],
    outcome: ObserverOutcome,
    run_id: Any,
    output_filter: Callable[[str], str] | None,
    observer: Any = None,
) -> None:
    """Deliver the events after the observer's cursor; stop at the first that fails."""
    cursor = journal.cursor(outcome.slot)
    try:
        if observer is None:
            observer = journal.load_observer(outcome.slot)
        if not observer.reattach(run_id):
            outcome.problem = f"its backend has no unfinished run {run_id!r} (finished or gone)"
            journal.set_cursor(outcome.slot, records[-1]["seq"])
            return
        # The dead process may have stored a batch whose answer it never got: what the backend
        # holds is left out of the batches sent again.
        count_stored = getattr(observer, "stored_point_counts", None)
        stored = count_stored() if callable(count_stored) else None
    except Exception as exc:
        outcome.left = _events_after(records, cursor)
        outcome.problem = f"cannot rebuild it: {describe_error(exc)}"
        return
    pending: dict[str, dict[str, list[Any]]] = {}
    logged: dict[str, int] = {}  # points of each metric in the batches before this one
    output = ""
    info: Any = {}
    for record in records:
        kind = record.get("kind")
        if kind == "points":
            restore_points(record["points"], pending)
            continue
        if kind == "output":
            output += record["text"]
            continue
        if kind != "event":
            continue
        name = record["event"]
        batch: dict[str, dict[str, list[Any]]] = {}
        if name == "log_metrics":
            batch, pending = pending, {}
            before = dict(logged)
            for metric, points in batch.items():
                logged[metric] = logged.get(metric, 0) + len(points["values"])
        elif name == "heartbeat_event":
            info = restore_value(record.get("info")) or {}
        if record["seq"] <= cursor:
            continue
        if batch and stored:
            batch = without_leading_points(batch, {m: stored.get(m, 0) - before.get(m, 0) for m in batch})
        try:
            _deliver(observer, record, batch, info, output, output_filter)
        except InvalidArtifactName as exc:
            outcome.lost += 1
            outcome.problem = f"refused an artifact: {exc}"
            journal.set_cursor(outcome.slot, record["seq"])
            continue
        except FileNotFoundError as exc:
            outcome.lost += 1
            outcome.problem = f"a file of the run is gone: {exc.filename or exc}"
            journal.set_cursor(outcome.slot, record["seq"])
            continue
        except Exception as exc:
            outcome.left = _events_after(records, record["seq"] - 1)
            outcome.problem = f"{name} failed: {describe_error(exc)}"
            return
        journal.set_cursor(outcome.slot, record["seq"])
        outcome.delivered += 1
    try:
        observer.join()
    except Exception as exc:
        outcome.problem = f"join failed: {describe_error(exc)}"


def _deliver(
    observer: Any,
    record: dict[str, Any],
    batch: dict[str, dict[str, list[Any]]],
    info: Any,
    output: str,
    output_filter: Callable[[str], str] | None,
) -> None:
    name = record["event"]
    if name == "log_metrics":
        observer.log_metrics(metrics_by_name=batch, info=info)
    elif name == "heartbeat_event":
        shown = output_filter(output) if output_filter is not None else output
        observer.heartbeat_event(
            info=info,
            captured_out=shown,
            beat_time=decode_time(record.get("beat_time")),
            result=restore_value(record.get("result")),
        )
    elif name == "artifact_event":
        with open(record["filename"], "rb"):  # gone: say so rather than let a backend guess
            pass
        observer.artifact_event(
            name=record["name"],
            filename=record["filename"],
            metadata=restore_value(record.get("metadata")),
            content_type=record.get("content_type"),
        )
    elif name == "resource_event":
        with open(record["filename"], "rb"):
            pass
        observer.resource_event(filename=record["filename"])
    elif name == "completed_event":
        observer.completed_event(
            stop_time=decode_time(record.get("stop_time")), result=restore_value(record.get("result"))
        )
    elif name == "interrupted_event":
        observer.interrupted_event(
            interrupt_time=decode_time(record.get("interrupt_time")), status=record.get("status")
        )
    elif name == "failed_event":
        observer.failed_event(
            fail_time=decode_time(record.get("fail_time")), fail_trace=list(record.get("fail_trace") or [])
        )
