"""Observer flags of a queued run, travelling with its flow run to wherever it starts.

``python exp.py -q -F runs -s sqlite:///runs.db`` records the run QUEUED in those observers;
the run that starts later (in a serve process or a worker, with its own settings) must record
into them too, under the same id, and a watcher that sees it cancelled must end it there. So
the flags go with the flow run as the label ``prefect-sacred.observer-flags`` (JSON: a list of
``[long flag, value]``), and the run's start and the watcher build the same observers from it.

Prefect shows labels to everyone who can see the flow run, and keeps them: a flag whose value
holds a credential (a password or token in a URL or a query) is refused before anything is
created, saying to name that observer in the deployment's ``PREFECT_SACRED_OBSERVERS`` or in a
Block. Relative paths are made absolute here, since the run starts in another directory.

The other options of a queued run (``--comment``, ``--name``, ``-b``, ``-C``, ``-l``, ``-f``,
``-e``, ...) travel the same way as ``prefect-sacred.run-options`` (JSON: the flags as given,
Sacred's command words, and the dotted keys the config updates set), so the run that starts
records the ``meta`` the QUEUED record has and behaves as asked. A value holding a credential is
refused likewise; the command words' config updates are redacted (the flow run's parameters carry
their values anyway). ``-D``/``-d`` act on the queuer's terminal, which the started run does not
have: they get one line at queue time and do not travel.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefect_sacred.config.paths import flatten_items, get_by_path, set_by_path
from prefect_sacred.flows.options import RUN_OPTIONS, RunOptions, UsageError, resolve_options
from prefect_sacred.observers.base import ObserverLike
from prefect_sacred.observers.registry import ObserverConfigError, observer_options
from prefect_sacred.utils import redact

__all__ = [
    "FLAGS_LABEL",
    "OPTIONS_LABEL",
    "Travelled",
    "flag_observers",
    "queue_notes",
    "travelled_options",
    "travelling_flags",
    "travelling_options",
]

FLAGS_LABEL = "prefect-sacred.observer-flags"
OPTIONS_LABEL = "prefect-sacred.run-options"
#: Flags that act where ``-q`` is typed, not where the run starts (``--id`` travels as the queued id).
_STAY_HOME = {"--queue", "--id", "--print-config", "--debug", "--pdb"}
_NO_EFFECT = {
    "--pdb": "-D/--pdb has no effect on a queued run: it starts in another process, without this terminal",
    "--debug": "-d/--debug has no effect on a queued run: its failure is in the flow run's log in Prefect",
    "--unobserved": "-u/--unobserved: the queued run is recorded nowhere, and starts without observers",
}
_PATH_FLAGS = {"--file_storage", "--tiny_db"}
_SQLITE_RELATIVE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$")


def travelling_flags(flags: Sequence[tuple[str, str]]) -> str | None:
    """The label value for a queued run's observer flags, or None without any.

    Raises:
        UsageError: a flag's value holds a credential (the message does not show it).
    """
    portable = []
    for long, value in flags:
        if redact(value) != value:
            raise UsageError(
                f"a queued run cannot take {long} with a credential in it (its flags travel with "
                "the flow run, where Prefect shows them): name that observer in the deployment's "
                "PREFECT_SACRED_OBSERVERS or in a Block instead"
            )
        portable.append([long, _absolute(long, value)])
    return json.dumps(portable) if portable else None


def _absolute(long: str, value: str) -> str:
    if long in _PATH_FLAGS:
        return os.path.abspath(os.path.expanduser(value))
    match = _SQLITE_RELATIVE.match(value) if long == "--sql" else None
    if match and not match.group(2).startswith(":memory:"):
        return match.group(1) + os.path.abspath(match.group(2))
    return value


def flag_observers(
    labels: Mapping[str, Any] | None, besides: Sequence[ObserverLike] = ()
) -> list[ObserverLike]:
    """The observers named by a flow run's ``prefect-sacred.observer-flags`` label (if any).

    Those equal to one of ``besides`` (the same store, by Sacred's observer equality: a flag
    naming a store the deployment records into anyway) are left out, so no store gets an event twice.

    Raises:
        ObserverConfigError: the label is malformed, names an unknown flag, or a value is refused.
    """
    text = (labels or {}).get(FLAGS_LABEL)
    if not text:
        return []
    try:
        flags = json.loads(str(text))
    except ValueError:
        raise ObserverConfigError(f"label {FLAGS_LABEL} is not JSON") from None
    by_long = {option.long: option for option in observer_options()}
    observers = []
    for entry in flags if isinstance(flags, list) else [None]:
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
            raise ObserverConfigError(f"label {FLAGS_LABEL}: expected [flag, value] pairs")
        long, value = entry
        if long not in by_long:
            raise ObserverConfigError(f"label {FLAGS_LABEL}: no observer flag {long} here")
        observer = by_long[long].factory(value)
        if observer not in besides and observer not in observers:
            observers.append(observer)
    return observers


@dataclass
class Travelled:
    """The options a queued run brought with it (see :func:`travelled_options`)."""

    #: The options that shape the run; ``recorded`` is every flag given at queue time.
    options: RunOptions
    #: Sacred's ``COMMAND``/``UPDATE``/``with`` entries of ``meta.options`` (None: ``ex.queue``).
    words: dict[str, Any] | None
    #: Dotted config keys the queue-time updates set (values come from the run's config).
    updated: list[str]

    def config_updates(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``meta.config_updates`` as the QUEUED record has it, read from the started run's config."""
        updates: dict[str, Any] = {}
        for path in self.updated:
            value = get_by_path(config, path, _MISSING)
            if value is not _MISSING:
                set_by_path(updates, path, value)
        return updates


_MISSING = object()


def queue_notes(options: RunOptions) -> list[str]:
    """One line per option given that has no effect, or another one, on a queued run."""
    return [note for flag, note in _NO_EFFECT.items() if options.recorded.get(flag)]


def travelling_options(
    options: RunOptions, words: Mapping[str, Any] | None, config_updates: Mapping[str, Any] | None
) -> str:
    """The label value for a queued run's options (set even without any: the config updates'
    keys and Sacred's command words travel in it too).

    Raises:
        UsageError: a flag's value holds a credential (the message does not show it).
    """
    recorded = dict(options.recorded)  # all of them for meta.options; _STAY_HOME's act no more
    for flag, value in recorded.items():
        shown = value if isinstance(value, list) else [value]
        if any(isinstance(item, str) and redact(item) != item for item in shown):
            raise UsageError(
                f"a queued run cannot take {flag} with a credential in it (its options travel with "
                "the flow run, where Prefect shows them)"
            )
    updated = [path for path, _ in flatten_items(config_updates or {})]
    portable_words = None
    if words is not None:
        portable_words = dict(words)
        portable_words["UPDATE"] = [redact(str(word)) for word in words.get("UPDATE") or []]
    document = {"options": recorded, "words": portable_words, "updated": updated}
    return json.dumps(document, default=str)


def travelled_options(labels: Mapping[str, Any] | None) -> Travelled | None:
    """The options a queued run brought in its ``prefect-sacred.run-options`` label, if any.

    ``recorded`` (``meta.options``) holds the flags that act no more (``--queue``, ``--pdb``)
    too, as the QUEUED record shows them.

    Raises:
        UsageError: the label is malformed or holds an invalid option.
    """
    text = (labels or {}).get(OPTIONS_LABEL)
    if not text:
        return None
    try:
        document = json.loads(str(text))
    except ValueError:
        raise UsageError(f"label {OPTIONS_LABEL} is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("options"), dict):
        raise UsageError(f"label {OPTIONS_LABEL}: expected an object with 'options'")
    given: dict[str, Any] = document["options"]
    run_flags = {option.long for option in RUN_OPTIONS} - _STAY_HOME
    options = resolve_options({flag: value for flag, value in given.items() if flag in run_flags})
    options.recorded = dict(given)
    words = document.get("words")
    updated = [str(path) for path in document.get("updated") or []]
    return Travelled(options, words if isinstance(words, dict) else None, updated)
