"""What Slack and Telegram share: the run dict Sacred formats its texts with, the Prefect flow
run, the background sender, resuming a run that ended in another process, pickling."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect_sacred.observers.base import RunObserver, resumed_run
from prefect_sacred.observers.notify.sender import BackgroundSender, Message, protect, raise_failures
from prefect_sacred.observers.notify.texts import check_text, render, td_format

__all__ = ["NotificationObserver", "check_options", "load_config", "require"]


class NotificationObserver(RunObserver):
    """A storage-less observer that sends a message for some events of a run.

    Subclasses set the texts (``started_text`` ... ``failed_text``; None sends nothing for
    that event) and implement :meth:`_deliver`.

    Args:
        priority: The observer's priority (Sacred's 10 for both notifiers).
        join_timeout: Seconds ``join`` waits for the messages still being sent.
        attempts: Tries per message; a ``Retry-After`` wait counts as one.
    """

    started_text: str | None = None
    completed_text: str | None = None
    interrupted_text: str | None = None
    failed_text: str | None = None

    def __init__(self, priority: int = 10, join_timeout: float = 15.0, attempts: int = 4) -> None:
        self.priority = priority
        self.join_timeout = join_timeout
        self.attempts = attempts
        self.run: dict[str, Any] | None = None
        self._sender: BackgroundSender | None = None

    def _set_texts(self, texts: dict[str, str | None], defaults: dict[str, str] | None = None) -> None:
        """Check and set the ``*_text`` templates (ValueError naming a bad one).

        A None text is ``defaults[option]`` when defaults are given, else no message.
        """
        for option, text in texts.items():
            checked = check_text(type(self).__name__, option, text, option.removesuffix("_text"))
            setattr(self, option, defaults[option] if checked is None and defaults is not None else checked)

    # --- the run --------------------------------------------------------------------------------

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
        self.run = {
            "_id": _id,
            "config": config,
            "start_time": start_time,
            "experiment": ex_info,
            "command": command,
            "host_info": host_info,
            "flow_run": _flow_run_of(meta_info),
        }
        self._sender = self._new_sender()
        if self.started_text is not None:
            self._send("started", self.started_text)
        return None  # no storage, so no run id

    def reattach(self, _id: Any) -> bool:
        """A run that started in another process: a notifier can always send its end."""
        self.run = _resumed_run(_id)
        self._sender = self._new_sender()
        return True

    def completed_event(self, stop_time: dt.datetime, result: Any) -> None:
        run = self._current()
        run.update(result=result, stop_time=stop_time, elapsed_time=_elapsed(run, stop_time))
        if self.completed_text is not None:
            self._send("completed", self.completed_text)

    def interrupted_event(self, interrupt_time: dt.datetime, status: str) -> None:
        run = self._current()
        run.update(status=status, interrupt_time=interrupt_time, elapsed_time=_elapsed(run, interrupt_time))
        if self.interrupted_text is not None:
            self._send("interrupted", self.interrupted_text)

    def failed_event(self, fail_time: dt.datetime, fail_trace: list[str]) -> None:
        run = self._current()
        run.update(
            fail_trace=fail_trace,
            error=fail_trace[-1].strip() if fail_trace else "",
            backtrace="".join(fail_trace),
            fail_time=fail_time,
            elapsed_time=_elapsed(run, fail_time),
        )
        if self.failed_text is not None:
            self._send("failed", self.failed_text)

    def join(self) -> None:
        """Wait up to ``join_timeout`` for the messages; raise NotificationError for lost ones."""
        sender, self._sender = self._sender, None
        if sender is not None:
            raise_failures(type(self).__name__, sender.join(self.join_timeout))

    # --- for subclasses -------------------------------------------------------------------------

    def _message(self, event: str, text: str) -> Message:
        """The message for ``event``: Sacred's text, then a line naming the flow run."""
        run = self._current()
        flow_run = run.get("flow_run") or {}
        name, url = flow_run.get("name"), flow_run.get("url")
        footer = self._flow_run_line(str(name), url) if name else ""
        return Message(event, render(text, run) + footer)

    def _flow_run_line(self, name: str, url: str | None) -> str:
        """The line naming the Prefect flow run, in the service's markup."""
        return f"\nPrefect flow run {name}" + (f" {url}" if url else "")

    def _deliver(self, message: Message) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release what ``_deliver`` opened, in the sender's thread."""

    # --- internals ------------------------------------------------------------------------------

    def _current(self) -> dict[str, Any]:
        if self.run is None:  # an end without a start: still say something
            self.run = _resumed_run(None)
        if self._sender is None:
            self._sender = self._new_sender()
        return self.run

    def _new_sender(self) -> BackgroundSender:
        return BackgroundSender(type(self).__name__, self._deliver, self._close, attempts=self.attempts)

    def _send(self, event: str, text: str) -> None:
        message = self._message(event, text)
        sender = self._sender or self._new_sender()
        self._sender = sender
        sender.submit(message)

    def _secrets(self) -> list[str]:
        """What must never be logged (registered with the scrubber when built or unpickled)."""
        return []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sender"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        protect(*self._secrets())


def _flow_run_of(meta_info: dict[str, Any]) -> dict[str, Any]:
    prefect = meta_info.get("prefect") if isinstance(meta_info, dict) else None
    prefect = prefect if isinstance(prefect, dict) else {}
    return {
        "id": prefect.get("flow_run_id"),
        "name": prefect.get("flow_run_name"),
        "url": prefect.get("ui_url"),
    }


def _elapsed(run: dict[str, Any], end: dt.datetime) -> str:
    start = run.get("start_time")
    if not isinstance(start, dt.datetime):
        return "an unknown time"
    if (start.tzinfo is None) != (end.tzinfo is None):
        start, end = _naive_utc(start), _naive_utc(end)
    return td_format(end - start)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _resumed_run(_id: Any) -> dict[str, Any]:
    """What can be known of a run that started in another process: what Prefect stored of it."""
    resumed = resumed_run()
    run: dict[str, Any] = {
        "_id": _id,
        "config": {},
        "start_time": None,
        "experiment": {"name": "experiment"},
        "command": "?",
        "host_info": {},
        "flow_run": {"id": None, "name": None, "url": None},
    }
    if resumed is not None:
        run["experiment"] = {"name": resumed.flow_name or "experiment"}
        run["start_time"] = resumed.start_time
        run["config"] = dict(resumed.parameters)
        run["flow_run"] = {"id": resumed.flow_run_id, "name": resumed.flow_run_name, "url": resumed.ui_url}
    return run


def require(module: str, owner: str, distribution: str, extra: str) -> Any:
    """Import ``module`` for ``owner``, or ImportError saying which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{owner} requires {distribution}: pip install 'prefect-sacred[{extra}]'") from None


def load_config(owner: str, path: Any) -> dict[str, Any]:
    """A notifier's settings from a ``.json``, ``.yaml``/``.yml`` or ``.pickle`` file, as Sacred."""
    import json
    import pickle
    from pathlib import Path

    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".json":
        data = json.loads(file.read_text(encoding="utf-8"))
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    elif suffix == ".pickle":
        with open(file, "rb") as handle:
            data = pickle.load(handle)
    else:
        raise ValueError(f"{owner}: config file {file.name!r} must end in .json, .yaml, .yml or .pickle")
    if not isinstance(data, dict):
        raise ValueError(f"{owner}: config file {file.name!r} must hold a mapping, not {type(data).__name__}")
    return data


def check_options(
    owner: str, source: str, given: dict[str, Any], known: set[str], required: set[str]
) -> None:
    """ValueError naming the options of ``given`` that are unknown or missing."""
    missing = sorted(required - set(given))
    if missing:
        raise ValueError(f"{owner}: {source} must contain {', '.join(map(repr, missing))}")
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(
            f"{owner}: unknown option(s) {', '.join(map(repr, unknown))} in {source} "
            f"(known: {', '.join(sorted(known))})"
        )
