"""SlackObserver against a fake webhook on loopback: Sacred's payload and texts, texts checked
when built, rate limits and outages, the Blocks, the seed configs, and a served run cancelled and
killed (one message each, sent by the serve process)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefect_sacred import Experiment, SlackObserver
from prefect_sacred.blocks import SlackObserverBlock, TelegramObserverBlock
from prefect_sacred.observers.notify import NotificationError, td_format
from prefect_sacred.observers.registry import ObserverConfigError, observer_from_url
from tests.servers.fake_slack import FakeSlack, Reply
from tests.servers.fake_telegram import TOKEN, FakeTelegram
from tests.support import subprocess_env, wait_for

# The two slack.json examples of the spec's "Slack Observer" section (Sacred's "Observing an
# Experiment" page), copied verbatim: the custom one has Sacred's wrong key and a bad brace.
SEEDS = Path(__file__).resolve().parents[1] / "data"
T0 = dt.datetime(2024, 1, 1, 12, 0, 0)
SACRED_COMPLETED = ":white_check_mark: *{name}* completed after _{elapsed}_ with result=`{result}`"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _start(observer: Any, name: str = "myexp", meta: dict[str, Any] | None = None) -> None:
    observer.started_event(
        ex_info={"name": name},
        command="main",
        host_info={"hostname": "box"},
        start_time=T0,
        config={"lr": 0.1},
        meta_info=meta or {},
        _id=7,
    )


def _experiment(observer: Any, name: str = "notify", body: Any = None) -> Experiment:
    ex = Experiment(name)
    ex.observers.append(observer)

    @ex.main
    def main(lr: float = 0.5) -> float:
        if body is not None:
            body()
        return lr * 2

    return ex


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.4, "less than a second"),
        (1, "1 second"),
        (3725, "1 hour, 2 minutes, 5 seconds"),
        (2 * 86400 + 60, "2 days, 1 minute"),
        (400 * 86400, "1 year, 1 month, 5 days"),
    ],
)
def test_elapsed_time_in_sacreds_words(seconds: float, words: str) -> None:
    assert td_format(dt.timedelta(seconds=seconds)) == words


def test_sacreds_payload_and_text_word_for_word(slack: FakeSlack) -> None:
    observer = SlackObserver(slack.url)
    assert observer.priority == 10
    _start(observer)
    assert observer.started_event is not None and slack.received == []  # no start message
    observer.completed_event(stop_time=T0 + dt.timedelta(seconds=3725), result=0.5)
    observer.join()
    [payload] = slack.received
    assert payload == {
        "username": "sacred-bot",
        "icon_emoji": ":angel:",
        "text": ":white_check_mark: *myexp* completed after _1 hour, 2 minutes, 5 seconds_ with result=`0.5`",
    }
    [request] = [r for r in slack.requests if r["method"] == "POST"]
    assert json.loads(request["body"]) == payload


def test_a_run_of_each_ending_sends_one_message_naming_the_flow_run(slack: FakeSlack) -> None:
    observer = SlackObserver(slack.url, bot_name="lab", icon=":imp:")
    run = _experiment(observer).run(config_updates={"lr": 2.0})
    assert run.status == "COMPLETED" and not run.observer_errors

    def boom() -> None:
        raise ValueError("bad_value *here*")

    with pytest.raises(ValueError):
        _experiment(observer, "failing", boom).run()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _experiment(observer, "stopped", interrupt).run()
    done, failed, stopped = slack.received
    assert {payload["username"] for payload in slack.received} == {"lab"}
    first, link = done["text"].split("\n")
    assert first == SACRED_COMPLETED.format(name="notify", elapsed="less than a second", result=4.0)
    flow_run_id = run.meta_info["prefect"]["flow_run_id"]
    name = run.meta_info["prefect"]["flow_run_name"]
    assert link == f"Prefect flow run <{os.environ['PREFECT_UI_URL']}/runs/flow-run/{flow_run_id}|{name}>"
    assert failed["text"].startswith(
        ":x: *failing* failed after _less than a second_ with `ValueError: bad_value *here*`\n"
    )
    assert stopped["text"].startswith(":warning: *stopped* interrupted after _less than a second_\n")


def test_custom_texts_use_sacreds_keys(slack: FakeSlack) -> None:
    observer = SlackObserver(
        slack.url,
        completed_text="{experiment[name]} #{_id} lr={config[lr]} on {host_info[hostname]}: "
        "{result} ({elapsed_time})",
        failed_text="{{literal}} {error} at {fail_time:%H:%M}",
    )
    _start(observer)
    observer.completed_event(stop_time=T0 + dt.timedelta(seconds=61), result="ok")
    observer.join()
    _start(observer)
    observer.failed_event(fail_time=T0, fail_trace=["Traceback\n", "KeyError: 'x'\n"])
    observer.join()
    assert slack.texts() == [
        "myexp #7 lr=0.1 on box: ok (1 minute, 1 second)",
        "{literal} KeyError: 'x' at 12:00",
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{ex_info[name]} done", "unknown key 'ex_info'"),
        ("{experiment[name] done", "bad braces"),
        ("done with {error}", "unknown key 'error'"),  # a completed text has no error
        ("{} done", "positional field"),
        ("done }", "bad braces"),
    ],
)
def test_a_bad_text_is_refused_when_the_observer_is_built(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="completed_text") as refused:
        SlackObserver("https://hooks.slack.com/services/T/B/X", completed_text=text)
    assert named in str(refused.value)


def _seed_slack_configs() -> list[dict[str, Any]]:
    """The two slack.json examples of the spec, as JSON."""
    return [json.loads((SEEDS / f"seed_slack_{kind}.json").read_text()) for kind in ("minimal", "custom")]


def test_every_seed_config_is_run_or_refused_clearly(tmp_path: Path, slack: FakeSlack) -> None:
    minimal, custom = _seed_slack_configs()
    assert set(minimal) == {"webhook_url"} and custom["failed_text"].startswith("Oh noes!")
    for index, config in enumerate([minimal]):
        for suffix, dump in ((".json", json.dumps), (".yaml", yaml.safe_dump)):
            path = tmp_path / f"slack{index}{suffix}"
            path.write_text(dump({**config, "webhook_url": slack.url}))
            observer = SlackObserver.from_config(path)
            _start(observer)
            observer.interrupted_event(interrupt_time=T0, status="INTERRUPTED")
            observer.join()
    assert slack.texts() == [":warning: *myexp* interrupted after _less than a second_"] * 2
    # The seeds' custom texts have an unclosed brace and Sacred's wrong key: refused, named.
    for suffix, dump in ((".json", json.dumps), (".yaml", yaml.safe_dump)):
        path = tmp_path / f"custom{suffix}"
        path.write_text(dump(custom))
        with pytest.raises(ValueError) as refused:
            SlackObserver.from_config(path)
        message = str(refused.value)
        assert "completed_text" in message and "'ex_info'" in message and "bad braces" in message
        assert "experiment" in message  # the keys it could have used
    fixed = {**custom, "webhook_url": slack.url}
    fixed["completed_text"] = "YAY! {experiment[name]} completed with result=`{result}`"
    fixed["failed_text"] = "Oh noes! {experiment[name]} failed saying `{error}`"
    path = tmp_path / "fixed.pickle"
    path.write_bytes(pickle.dumps(fixed))
    observer = SlackObserver.from_config(path)
    assert (observer.bot_name, observer.icon) == ("my-sacred-bot", ":imp:")
    _start(observer)
    observer.completed_event(stop_time=T0, result=1)
    observer.join()
    assert slack.received[-1] == {
        "username": "my-sacred-bot",
        "icon_emoji": ":imp:",
        "text": "YAY! myexp completed with result=`1`",
    }
    (tmp_path / "typo.json").write_text(json.dumps({"webhook_url": slack.url, "bot_nmae": "x"}))
    with pytest.raises(ValueError, match=r"unknown option.*'bot_nmae'"):
        SlackObserver.from_config(tmp_path / "typo.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="'webhook_url'"):
        SlackObserver.from_config(tmp_path / "empty.json")


def test_rate_limits_errors_and_timeouts_are_retried_and_never_slow_the_run(slack: FakeSlack) -> None:
    slack.script += [
        Reply(429, "rate_limited", {"Retry-After": "1"}),
        Reply(500, "rollup_error"),
        Reply(200, "ok", delay=1.5),  # past the read timeout
    ]
    observer = SlackObserver(slack.url, timeout=(1.0, 0.5))
    _start(observer)
    began = time.monotonic()
    observer.completed_event(stop_time=T0, result=1)
    assert time.monotonic() - began < 0.2  # sent from another thread
    observer.join()
    waited = time.monotonic() - began
    assert len(slack.received) == 1 and len([r for r in slack.requests if r["method"] == "POST"]) == 4
    assert waited >= 1.0 + 0.5  # Retry-After, then the back-off after the 500


def test_a_lost_message_is_logged_named_and_reported_at_the_end_without_the_url(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slack.script += [Reply(404, "no_service")]
    observer = SlackObserver(slack.url)
    run = _experiment(observer).run()
    assert run.status == "COMPLETED" and run.result == 1.0
    assert run.observer_errors == {"SlackObserver": 1}
    assert "SlackObserver" in caplog.text and "no_service" in caplog.text
    # A server that is gone: connection refused, retried a bounded number of times.
    gone = FakeSlack().start()
    url = gone.url
    gone.stop()
    observer = SlackObserver(url, attempts=2, join_timeout=10)
    _start(observer)
    observer.failed_event(fail_time=T0, fail_trace=["ValueError: x\n"])
    with pytest.raises(NotificationError, match="SlackObserver: 1 notification") as lost:
        observer.join()
    secret = url.rsplit("/", 1)[-1]
    for text in (str(lost.value), caplog.text, repr(observer), *map(str, run.info.values())):
        assert secret not in text and "/services/" not in text


def test_the_observer_pickles_and_copies(slack: FakeSlack) -> None:
    observer = SlackObserver(slack.url)
    _start(observer)
    clone = pickle.loads(pickle.dumps(observer))
    twin = copy.copy(observer)
    _start(twin, "twin")
    observer.completed_event(stop_time=T0, result=1)
    observer.join()
    twin.completed_event(stop_time=T0, result=2)
    twin.join()
    assert [text.split("*")[1] for text in slack.texts()] == ["myexp", "twin"]
    assert clone.reattach(3) is True
    clone.interrupted_event(interrupt_time=T0, status="INTERRUPTED")
    clone.join()
    assert slack.texts()[-1] == ":warning: *experiment* interrupted after _an unknown time_"


def test_slack_block_round_trip_and_prefects_slack_webhook(slack: FakeSlack) -> None:
    from prefect.blocks.notifications import SlackWebhook

    name = f"test-slack-{uuid.uuid4().hex[:8]}"
    SlackObserverBlock(webhook_url=slack.url, bot_name="blocky", failed_text="{error}").save(name)
    loaded = SlackObserverBlock.load(name)
    assert "s3cr3t" not in repr(loaded) and "s3cr3t" not in str(loaded.model_dump())
    for observer in (loaded.observer(), observer_from_url(f"block://sacred-slack/{name}")):
        assert isinstance(observer, SlackObserver) and observer.bot_name == "blocky"
        assert "s3cr3t" not in repr(observer)
    with pytest.raises(ValueError, match="unknown key 'result'"):
        SlackObserverBlock(webhook_url=slack.url, failed_text="{result}").observer()
    SlackWebhook(url=slack.url).save(name)
    for observer in (SlackObserver.from_block(name), observer_from_url(f"slack-webhook://{name}")):
        _start(observer)
        observer.completed_event(stop_time=T0, result=3)
        observer.join()
    assert slack.texts()[-1].endswith("result=`3`") and len(slack.received) == 2
    with pytest.raises(ObserverConfigError, match="cannot load SlackWebhook block 'missing-one'"):
        observer_from_url("slack-webhook://missing-one")


class TestSlackBlockStandards:
    """Prefect's BlockStandardTestSuite, minus the logo check (it downloads the image)."""

    from prefect.testing.standard_test_suites import BlockStandardTestSuite as _Suite

    block = pytest.fixture(lambda self: SlackObserverBlock)
    test_has_a_description = _Suite.test_has_a_description
    test_has_a_documentation_url = _Suite.test_has_a_documentation_url
    test_all_fields_have_a_description = _Suite.test_all_fields_have_a_description
    test_has_a_valid_code_example = _Suite.test_has_a_valid_code_example


def test_importing_the_wing_and_blocks_imports_no_client_library() -> None:
    code = (
        "import sys, prefect_sacred.blocks, prefect_sacred.observers.notify;"
        "from prefect_sacred.observers.registry import load_observer_plugins; load_observer_plugins();"
        "print(sorted({'requests', 'telegram'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


# --- a served run cancelled and killed: one message each, from the serve process -----------------


@pytest.mark.slow
def test_served_run_cancelled_or_killed_sends_exactly_one_message(tmp_path: Path) -> None:
    from prefect_sacred.testing._process_scenarios import ProcessScenarios

    class Serving(ProcessScenarios):
        process_timeout = 60.0

    helper = Serving()
    name = f"served-{uuid.uuid4().hex[:8]}"
    runs = tmp_path / "runs"
    with FakeSlack() as slack, FakeTelegram() as telegram:
        SlackObserverBlock(webhook_url=slack.url).save(name)
        TelegramObserverBlock(token=TOKEN, chat_id="42", base_url=telegram.base_url).save(name)
        # The file storage gives the run an id, which the serve process reads back to finish it.
        url = f"file://{runs} block://sacred-slack/{name} block://sacred-telegram/{name}"
        with helper._serving(url, tmp_path) as deployment:
            flow_run_id, run_id = helper._start_served_run(deployment)
            wait_for(lambda: telegram.texts(), what="the started message")
            done = subprocess.run(
                [sys.executable, "-m", "prefect", "flow-run", "cancel", str(flow_run_id)],
                capture_output=True,
                text=True,
                timeout=60,
                env=subprocess_env(),
            )
            assert done.returncode == 0, done.stderr[-3000:]
            wait_for(lambda: slack.texts(), timeout=60, what="the interrupted message")

            _, killed_id = helper._start_served_run(deployment)
            info = runs / str(killed_id) / "info.json"
            pid = wait_for(lambda: json.loads(info.read_text()).get("pid"), timeout=30, what="the pid")
            os.kill(int(pid), signal.SIGKILL)
            wait_for(lambda: len(slack.texts()) >= 2, timeout=60, what="the failed message")
            time.sleep(3)  # a duplicate would come from the other process by now
        interrupted, failed = slack.texts()
        assert interrupted.startswith(":warning: *served* interrupted after _")
        assert "\nPrefect flow run <http" in interrupted
        assert failed.startswith(":x: *served* failed after _") and "SIGKILL" in failed
        tg = telegram.texts()
        assert [text.split(" ", 1)[0] for text in tg] == ["♻", "⚠", "♻", "❌"], tg
        assert "SIGKILL" in tg[3] and "Backtrace:" in tg[3]
        assert run_id != killed_id
