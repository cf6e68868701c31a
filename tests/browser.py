"""One headless Chromium for a whole test module, driven over the DevTools protocol.

Starting Chromium costs about a second, and ``--dump-dom`` with ``--virtual-time-budget``
renders for a fixed budget; a browser kept running (its cache keeps the page's scripts) renders
each page in a new tab and returns once the page shows what the caller waits for and settles.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# The page's DOM, and whether its images are decoded and its fonts loaded (the screenshot
# should show the plot and the text as a user would see them).
_SNAPSHOT = """(() => ({
    html: document.documentElement.outerHTML,
    settled: document.readyState === "complete"
        && Array.from(document.images).every((image) => image.complete)
        && document.fonts.status === "loaded",
}))()"""


class Browser:
    """A headless Chromium process and its DevTools connection.

    Args:
        profile: An empty directory for Chromium's profile.
        timeout: Seconds any one DevTools command may take.
    """

    def __init__(self, profile: Path, timeout: float = 30.0) -> None:
        assert CHROMIUM is not None, "chromium is not installed"
        self.timeout = timeout
        self._ids = itertools.count(1)
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"  # Chromium writes its port and path there
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) == 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()
        self.connection: ClientConnection = connect(
            f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout
        )

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.connection.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self.connection.recv(timeout=max(0.0, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def render(
        self,
        url: str,
        screenshot: Path,
        until: Callable[[str], bool],
        height: int = 1300,
        timeout: float = 30.0,
        settle: float = 0.5,
        then: tuple[str, Callable[[str], bool]] | None = None,
    ) -> str:
        """The DOM of ``url`` once ``until(dom)`` holds, its images are decoded and the DOM has
        not changed for ``settle`` seconds.

        The page opens in a new tab 1280 px wide and ``height`` px high; its screenshot goes
        to ``screenshot``. After ``timeout`` seconds the DOM is returned as it is, for the
        caller's assertions to say what is missing. ``then``: a script to run in the page once
        it is shown (a click), and what the DOM must show afterwards instead of ``until``.
        """
        # One browser context for all pages: its cache keeps the UI's scripts compiled.
        created = self._call("Target.createTarget", url="about:blank")
        target = created["targetId"]
        try:
            session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self._call(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=1280,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            self._call("Emulation.setScrollbarsHidden", session, hidden=True)
            self._call("Page.navigate", session, url=url)
            steps = [(None, until), *([then] if then is not None else [])]
            for script, shows in steps:
                if script is not None:
                    self._call("Runtime.evaluate", session, expression=script, userGesture=True)
                html = self._settled(session, shows, time.monotonic() + timeout, settle)
            shot = self._call("Page.captureScreenshot", session, format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return html
        finally:
            self._call("Target.closeTarget", targetId=target)

    def _settled(self, session: str, shows: Callable[[str], bool], deadline: float, settle: float) -> str:
        html, since = "", time.monotonic()
        while True:
            snapshot = self._call("Runtime.evaluate", session, expression=_SNAPSHOT, returnByValue=True)
            value = snapshot.get("result", {}).get("value") or {"html": "", "settled": False}
            if value["html"] != html:
                html, since = value["html"], time.monotonic()
            # Shown, and unchanged for `settle` seconds: what loads after (a graph) is in.
            ready = value["settled"] and shows(html) and time.monotonic() - since >= settle
            if ready or time.monotonic() > deadline:
                return html
            time.sleep(0.1)

    def close(self) -> None:
        """Stop Chromium and the processes it started (they share its session)."""
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)  # the whole group: renderers and zygotes too
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
