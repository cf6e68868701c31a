"""The ``prefect-sacred`` console script.

``prefect-sacred sync [JOURNAL_DIR ...]`` or ``prefect-sacred sync --all``: deliver what runs'
journals hold to the observers that have not received it (like ``wandb sync``), in order and
idempotently, and report per run and observer what was delivered and what could not be.
``prefect-sacred sync --mongo-dumps [PATH ...] [-m DB]``: write the runs a MongoObserver saved
to files (when MongoDB could not take their end) back into MongoDB, once. Exits with status 1
when something is left, 2 on a malformed command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main", "run"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from prefect_sacred.core.journal import JOURNAL_DIR_ENV_VAR

    parser = argparse.ArgumentParser(prog="prefect-sacred", description="prefect-sacred's tools")
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser(
        "sync",
        help="deliver what runs' journals hold to their observers",
        description=(
            "Deliver the events in runs' journals to every observer that has not received them, "
            "in order; runs whose process died without an end are recorded as FAILED. "
            f"Journals live in {JOURNAL_DIR_ENV_VAR} (default ~/.prefect_sacred/journal)."
        ),
    )
    sync.add_argument("journals", nargs="*", metavar="JOURNAL_DIR", help="journal directories")
    sync.add_argument(
        "--all", action="store_true", help="every journal on this machine (except runs still running)"
    )
    sync.add_argument(
        "--mongo-dumps",
        nargs="*",
        metavar="PATH",
        help=(
            "restore the runs a MongoObserver saved to files into MongoDB: dump files, or directories "
            "of sacred_mongo_fail_*.json (default ~/.prefect_sacred/mongo_failures); each restored "
            "dump is renamed <name>.restored"
        ),
    )
    sync.add_argument(
        "-m",
        "--mongo_db",
        metavar="DB",
        help=(
            "the MongoDB of --mongo-dumps, as -m takes it ([HOST:PORT:]DB_NAME or a mongodb:// URI; "
            "default: the one mongodb:// observer in PREFECT_SACRED_OBSERVERS)"
        ),
    )
    watch = commands.add_parser(
        "watch",
        help="record runs of an experiment's deployments as QUEUED when they are created",
        description=(
            "Follow Prefect's event stream: runs of the experiment's deployments created by the UI, "
            "`prefect deployment run`, schedules or the API are recorded QUEUED by its observers "
            "(code and PREFECT_SACRED_OBSERVERS); queued runs cancelled or deleted before they start "
            "become INTERRUPTED; runs on this machine whose process died get their journal and "
            "FAILED, runs elsewhere FAILED once their beats stop for --dead-after seconds. One per "
            "work pool is enough; several at once give one record."
        ),
    )
    watch.add_argument("experiment", metavar="EXPERIMENT", help="a script (exp.py) or module (pkg.exp[:ex])")
    watch.add_argument(
        "--dead-after",
        type=_seconds,
        metavar="SECONDS",
        help=(
            "silence that ends a run on another machine, at least 3 of its beat intervals "
            "(default: PREFECT_SACRED_DEAD_AFTER or 300)"
        ),
    )
    options = parser.parse_args(argv)
    if options.command == "watch":
        from prefect_sacred.cli.watch import watch_command

        return watch_command(options.experiment, dead_after=options.dead_after)
    if options.mongo_db is not None and options.mongo_dumps is None:
        parser.error("sync: -m/--mongo_db goes with --mongo-dumps")
    if not options.all and not options.journals and options.mongo_dumps is None:
        parser.error("sync: give journal directories or --all (or --mongo-dumps)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = _sync_journals(options) if options.all or options.journals else 0
    if options.mongo_dumps is not None:
        status = max(status, _restore_mongo_dumps(options.mongo_dumps, options.mongo_db))
    return status


def _sync_journals(options: argparse.Namespace) -> int:
    from prefect_sacred.core.journal import RunJournal, journal_root
    from prefect_sacred.core.sync import sync_journal

    paths = list(options.journals)
    if options.all:
        paths += [path for path in RunJournal.all() if path not in paths]
        if not paths:
            print(f"no journals in {journal_root()}")
    status = 0
    for path in paths:
        try:
            report = sync_journal(path)
        except FileNotFoundError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = 1
            continue
        for line in report.lines():
            print(line)
        if report.skipped is not None and not options.all:
            status = 1
        if not report.complete or any(outcome.lost for outcome in report.outcomes):
            status = 1 if report.skipped is None or not options.all else status
    return status


def _restore_mongo_dumps(paths: list[str], mongo_db: str | None) -> int:
    from prefect_sacred.observers.mongo.failures import DEFAULT_FAILURE_DIR
    from prefect_sacred.observers.mongo.restore import find_dumps, mongo_target, restore_dumps
    from prefect_sacred.observers.registry import ObserverConfigError

    dumps = find_dumps(paths)
    try:
        # A malformed -m is an error even with nothing to restore; the environment is read only
        # when there is something.
        target = mongo_target(mongo_db) if mongo_db is not None or dumps else {}
        reports = restore_dumps(dumps, target)
    except ObserverConfigError as exc:
        print(f"prefect-sacred sync: {exc}", file=sys.stderr)
        return 2
    if not reports:
        print(f"no Mongo failure dumps in {', '.join(paths) or DEFAULT_FAILURE_DIR}")
    for report in reports:
        print(report.line())
    return 0 if all(report.ok for report in reports) else 1


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def run() -> None:
    """The console script's entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
