"""TelegramObserver against a fake Bot API on loopback (python-telegram-bot's ``base_url``):
Sacred's texts and silence rules, Markdown Telegram refuses, flood control, proxies, event loops,
configs and the Block."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefect_sacred import Experiment, TelegramObserver
from prefect_sacred.blocks import TelegramObserverBlock
from prefect_sacred.observers.notify import NotificationError
from prefect_sacred.observers.notify.telegram import proxy_with_credentials
from prefect_sacred.observers.registry import observer_from_url
from tests.servers.fake_telegram import TOKEN, FakeTelegram, Reply, flood, markdown_error

T0 = dt.datetime(2024, 1, 1, 12, 0, 0)


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


def _observer(fake: FakeTelegram, **kwargs: Any) -> TelegramObserver:
    return TelegramObserver(TOKEN, 42, base_url=fake.base_url, **kwargs)


def _start(observer: Any, name: str = "myexp") -> None:
    observer.started_event(
        ex_info={"name": name},
        command="main",
        host_info={"hostname": "box"},
        start_time=T0,
        config={"lr": 0.1},
        meta_info={},
        _id=7,
    )


def _experiment(observer: Any, name: str, body: Any = None) -> Experiment:
    ex = Experiment(name)
    ex.observers.append(observer)

    @ex.main
    def main() -> int:
        if body is not None:
            body()
        return 3

    return ex


def test_sacreds_texts_and_silence(telegram: FakeTelegram) -> None:
    observer = _observer(telegram, silent_completion=True)
    _start(observer)
    observer.completed_event(stop_time=T0 + dt.timedelta(seconds=65), result=0.5)
    observer.join()
    started, completed = telegram.messages
    assert started == {
        "chat_id": "42",
        "text": "♻ *myexp* started at _2024-01-01 12:00:00_ on host `box`",
        "parse_mode": "Markdown",
        "disable_notification": True,
    }
    assert completed["text"] == "✅ *myexp* completed after _1 minute, 5 seconds_ with result=`0.5`"
    assert completed["disable_notification"] is True and completed["parse_mode"] == "Markdown"
    loud = _observer(telegram)
    _start(loud)
    loud.completed_event(stop_time=T0, result=1)
    _ = loud.join()
    assert telegram.messages[-1]["disable_notification"] is False


def test_runs_that_fail_or_are_interrupted_and_names_telegram_refuses(telegram: FakeTelegram) -> None:
    observer = _observer(telegram)

    def boom() -> None:
        raise ValueError("no_such *key")

    with pytest.raises(ValueError):
        _experiment(observer, "my_exp", boom).run()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _experiment(observer, "plain", interrupt).run()
    started, failed, started_again, interrupted = telegram.messages
    # "my_exp" cannot be bold in Telegram's Markdown: the words still arrive, as plain text.
    assert started["parse_mode"] is None and started["text"].startswith("♻ *my_exp* started at _")
    assert failed["parse_mode"] is None and failed["disable_notification"] is False
    first, _, rest = failed["text"].partition("\n\nBacktrace:\n```")
    assert first == "❌ *my_exp* failed after _less than a second_ with `ValueError: no_such *key`"
    assert "Traceback (most recent call last)" in rest and 'raise ValueError("no_such *key")' in rest
    assert rest.split("```")[1].startswith("\nPrefect flow run [")  # names and links the flow run
    assert started_again["parse_mode"] == "Markdown"
    assert interrupted["text"].startswith(
        "⚠ *plain* interrupted after _less than a second_\nPrefect flow run ["
    )
    assert markdown_error(interrupted["text"]) is None
    markdown_calls = [r for r in telegram.requests if r["path"].endswith("/sendMessage")]
    assert len(markdown_calls) == 6  # two refused, resent plain: no message lost or doubled


def test_a_long_backtrace_keeps_its_end(telegram: FakeTelegram) -> None:
    observer = _observer(telegram, started_text=None)
    _start(observer)
    trace = ["Traceback (most recent call last):\n", *[f'  File "x.py", line {n}\n' for n in range(400)]]
    observer.failed_event(fail_time=T0, fail_trace=[*trace, "RuntimeError: the end\n"])
    observer.join()
    [message] = telegram.messages
    assert len(message["text"]) <= 4096 and message["parse_mode"] == "Markdown"
    assert "RuntimeError: the end\n```" in message["text"] and "line 0\n" not in message["text"]


def test_flood_control_and_outages_are_waited_out(telegram: FakeTelegram) -> None:
    telegram.script += [flood(1), Reply(502, "bad gateway")]
    observer = _observer(telegram, started_text=None)
    _start(observer)
    began = time.monotonic()
    observer.interrupted_event(interrupt_time=T0, status="INTERRUPTED")
    assert time.monotonic() - began < 0.2
    observer.join()
    assert time.monotonic() - began >= 1.0
    assert telegram.texts() == ["⚠ *myexp* interrupted after _less than a second_"]


def test_a_wrong_token_is_reported_at_the_end_and_never_shown(
    telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "999999:WRONG-s3cr3t-t0k3n"
    observer = TelegramObserver(wrong, 42, base_url=telegram.base_url)
    run = _experiment(observer, "wrong").run()
    assert run.status == "COMPLETED" and run.observer_errors == {"TelegramObserver": 1}
    assert telegram.messages == []
    assert "TelegramObserver" in caplog.text and "not delivered" in caplog.text
    observer = TelegramObserver(wrong, 42, base_url=telegram.base_url)
    _start(observer)
    with pytest.raises(NotificationError) as lost:
        observer.join()
    for text in (str(lost.value), caplog.text, repr(observer), json.dumps(run.info, default=str)):
        assert wrong not in text and "WRONG" not in text


def test_sending_from_inside_a_running_event_loop(telegram: FakeTelegram) -> None:
    observer = _observer(telegram)

    async def flow_like() -> None:
        _start(observer)
        observer.completed_event(stop_time=T0, result=1)
        await asyncio.sleep(0)
        observer.join()  # blocks this loop for at most join_timeout, never nests it

    asyncio.run(flow_like())
    assert len(telegram.messages) == 2


def test_configs_from_files(tmp_path: Path, telegram: FakeTelegram) -> None:
    config = {"token": TOKEN, "chat_id": 42, "silent_completion": True, "started_text": None}
    for suffix, dump in ((".json", json.dumps), (".yaml", yaml.safe_dump)):
        path = tmp_path / f"telegram{suffix}"
        path.write_text(dump(config))
        observer = TelegramObserver.from_config(path)
        observer.base_url = telegram.base_url
        _start(observer)
        observer.completed_event(stop_time=T0, result=1)
        observer.join()
    assert [m["disable_notification"] for m in telegram.messages] == [True, True]  # no start message
    path = tmp_path / "telegram.pickle"
    path.write_bytes(pickle.dumps({**config, "failed_text": "{experiment[name]}: {error}"}))
    assert TelegramObserver.from_config(path).failed_text == "{experiment[name]}: {error}"
    for broken, match in (
        ({"chat_id": 42}, "must contain entries for 'token' and 'chat_id'"),
        ({"token": TOKEN}, "must contain entries for 'token' and 'chat_id'"),
        ({**config, "started_text": "{ex_info[name]"}, "started_text.*unknown key 'ex_info'"),
        ({**config, "proxy_url": "ftp://proxy"}, "HTTP and SOCKS5 are supported"),
        ({**config, "proxy": "x"}, "unknown option"),
    ):
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=match):
            TelegramObserver.from_config(path)


def test_through_an_http_proxy_with_credentials(telegram: FakeTelegram) -> None:
    # The fake answers proxied requests itself: the Bot API host never resolves.
    observer = TelegramObserver(
        TOKEN,
        42,
        base_url="http://api.telegram.invalid/bot",
        proxy_url=f"http://127.0.0.1:{telegram.port}",
        username="alice",
        password="p@ss:w0rd",
        started_text=None,
    )
    assert "p@ss" not in repr(observer)
    _start(observer)
    observer.completed_event(stop_time=T0, result=1)
    observer.join()
    assert len(telegram.messages) == 1
    expected = "Basic " + base64.b64encode(b"alice:p@ss:w0rd").decode()
    assert set(telegram.proxy_authorizations) == {expected}


def test_proxy_urls() -> None:
    assert proxy_with_credentials("socks5://proxy:1080", "u", "p w") == "socks5://u:p%20w@proxy:1080"
    assert proxy_with_credentials("http://old:x@proxy:3128/", "u", None) == "http://u@proxy:3128/"
    assert proxy_with_credentials("http://proxy:3128") == "http://proxy:3128"
    observer = TelegramObserver(TOKEN, 42, proxy_url="socks5://127.0.0.1:1", username="u", password="p")
    from prefect_sacred.observers.notify.telegram import _Session

    bot = _Session(observer)._bot()  # socks needs python-telegram-bot[socks]
    assert bot.token == TOKEN


def test_pickles_and_accepts_a_bot(telegram: FakeTelegram) -> None:
    from telegram import Bot

    observer = TelegramObserver(Bot(TOKEN, base_url=telegram.base_url), "42")
    assert observer.base_url == telegram.base_url
    _start(observer)
    clone = pickle.loads(pickle.dumps(observer))
    observer.join()
    assert clone.reattach(5) is True
    clone.failed_event(fail_time=T0, fail_trace=["Crashed: killed\n"])
    clone.join()
    assert telegram.texts()[-1].startswith(
        "❌ *experiment* failed after _an unknown time_ with `Crashed: killed`"
    )


def test_telegram_block_round_trip(telegram: FakeTelegram) -> None:
    name = f"test-telegram-{uuid.uuid4().hex[:8]}"
    TelegramObserverBlock(
        token=TOKEN,
        chat_id="-100123",
        silent_completion=True,
        proxy_url="http://proxy:3128",
        proxy_username="bob",
        proxy_password="hunter2",
        started_text="",
        base_url=telegram.base_url,
    ).save(name)
    loaded = TelegramObserverBlock.load(name)
    assert "s3cr3t" not in repr(loaded) and "hunter2" not in repr(loaded)
    for observer in (loaded.observer(), observer_from_url(f"block://sacred-telegram/{name}")):
        assert isinstance(observer, TelegramObserver)
        assert observer.chat_id == -100123 and observer.silent_completion
        assert observer.started_text is not None and observer.proxy == "http://bob:hunter2@proxy:3128"
        assert "hunter2" not in repr(observer) and "s3cr3t" not in repr(observer)


class TestTelegramBlockStandards:
    """Prefect's BlockStandardTestSuite, minus the logo check (it downloads the image)."""

    from prefect.testing.standard_test_suites import BlockStandardTestSuite as _Suite

    block = pytest.fixture(lambda self: TelegramObserverBlock)
    test_has_a_description = _Suite.test_has_a_description
    test_has_a_documentation_url = _Suite.test_has_a_documentation_url
    test_all_fields_have_a_description = _Suite.test_all_fields_have_a_description
    test_has_a_valid_code_example = _Suite.test_has_a_valid_code_example
