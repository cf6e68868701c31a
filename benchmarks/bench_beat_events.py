"""What a run's beat event (``prefect-sacred.run.heartbeat``) costs per beat, beside the event off.

Needs a Prefect server (``PREFECT_API_URL``; ``prefect server start`` in another shell). A real
:class:`~prefect_sacred.core.run.Run` with a FileStorageObserver beats ``--beats`` times, with
``PREFECT_SACRED_BEAT_EVENTS`` off and on. Reported per beat:

* ``Run.beat`` on the calling (heartbeat) thread: what the run itself waits for;
* process CPU (every thread, the sender's included) per beat;
* with the event on: the time until the sender's POST was answered (the event is in Prefect).

    .venv/bin/python benchmarks/bench_beat_events.py [--beats 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any


def _flow_run() -> tuple[str, str]:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="bench-beat-events")
    def bench() -> None:
        pass

    with get_client(sync_client=True) as client:
        created = client.create_flow_run(bench)
    return str(created.id), created.name


def measure(beats: int, events: bool, flow_run: tuple[str, str]) -> dict[str, Any]:
    from prefect_sacred.core.run import Run
    from prefect_sacred.flows.beat_events import beat_sender_for
    from prefect_sacred.observers.file_storage import FileStorageObserver

    os.environ["PREFECT_SACRED_BEAT_EVENTS"] = "on" if events else "off"
    with tempfile.TemporaryDirectory() as runs:
        run = Run(
            experiment_info={"name": "bench-beat-events"},
            host_info={},
            meta_info={"prefect": {"flow_run_id": flow_run[0], "flow_run_name": flow_run[1]}},
            config={},
            command="main",
            observers=[FileStorageObserver(runs)],
            beat_interval=3600.0,  # its own heartbeat stays quiet: the beats are ours, timed
            capture_mode="no",
            journal=False,
            beat_events=beat_sender_for,
        )
        run.start()
        sender = run._beat_events
        assert (sender is not None) == events
        caller, answered = [], []
        cpu = time.process_time()
        for step in range(beats):
            run.log_scalar("loss", 1.0 / (step + 1), step)
            sent = sender.sent if sender is not None else 0
            began = time.perf_counter()
            run.beat()
            caller.append(time.perf_counter() - began)
            if sender is not None:
                while sender.sent == sent and time.perf_counter() - began < 5:
                    time.sleep(0.0002)
                answered.append(time.perf_counter() - began)
            run.fanout.join()  # the observer's worker is done too: the CPU counted is this beat's
        cpu_per_beat = (time.process_time() - cpu) / beats
        dropped = sender.dropped if sender is not None else 0
        run.complete(None)
    return {"caller": caller, "answered": answered, "cpu": cpu_per_beat, "dropped": dropped}


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{1000 * statistics.median(values):.3f} / {1000 * statistics.fmean(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--beats", type=int, default=200)
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("set PREFECT_API_URL to a running Prefect server")
    flow_run = _flow_run()
    measure(10, True, flow_run)  # warm-up: imports, the sender's client
    results = [(events, measure(args.beats, events, flow_run)) for events in (False, True, False, True)]
    print(f"{args.beats} beats, one metric point each, FileStorageObserver\n")
    print(
        "| beat event | `Run.beat` median / mean (ms) | CPU per beat (ms) | event stored median / mean (ms) |"
    )
    print("|---|---|---|---|")
    for events, result in results:
        label = "on" if events else "off"
        cpu = f"{1000 * result['cpu']:.3f}"
        print(f"| {label} | {_ms(result['caller'])} | {cpu} | {_ms(result['answered'])} |")


if __name__ == "__main__":
    main()
