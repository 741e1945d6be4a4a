"""Open a page in headless Chromium and report what a person would see: a small DevTools-protocol client.

Chromium started with ``--remote-debugging-pipe`` reads JSON commands, each ended by a NUL
byte, from its file descriptor 3 and writes answers and events the same way to descriptor 4
(https://chromedevtools.github.io/devtools-protocol/). That is all this needs: no websocket,
no port, no Python package beyond the standard library.

    python tests/browser.py out/index.html docs/results_page.png   # check a page, keep its screenshot

``open_page`` loads a file, waits for its load event, and returns a ``PageReport``: every
<img> with its natural width (0: it did not load), every console error, uncaught exception
and failed request, and a PNG screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def find_chromium() -> str | None:
    """The Chromium command on PATH (Debian: chromium; elsewhere often chromium-browser), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    """What the browser saw: images (src, complete, naturalWidth), errors in words, the screenshot (PNG bytes)."""

    images: list[dict[str, Any]]
    errors: list[str]
    screenshot: bytes
    title: str = ""
    height: int = 0  # of the whole page, in CSS pixels

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not (i["complete"] and i["naturalWidth"] > 0)]

    def problems(self) -> list[str]:
        """Everything a person would call broken: images that did not load, then console errors."""
        return [f"image did not load: {src}" for src in self.broken_images] + self.errors


@dataclass
class _Pipe:
    """Both ends of the DevTools pipe: send a command and wait for its answer, keeping the events seen meanwhile."""

    to_browser: int
    from_browser: int
    deadline: float
    events: list[dict[str, Any]] = field(default_factory=list)
    _buffer: bytes = b""
    _next_id: int = 0

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it crash? see its stderr)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        command = {"id": self._next_id, "method": method, "params": params}
        if session:
            command["sessionId"] = session
        os.write(self.to_browser, json.dumps(command).encode() + b"\0")
        while True:
            message = self._read_message()
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            message = self._read_message()
            self.events.append(message)
            if message.get("method") == method:
                return message


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions, error log entries and failed requests, one line each."""
    found = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            found.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            found.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            found.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}".rstrip())
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            found.append(f"request failed: {p.get('errorText')} (request {p.get('requestId')})")
    return list(dict.fromkeys(found))  # the same failure can come as a log entry and a failed request


_IMAGES_JS = ("Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, "
              "naturalWidth: i.naturalWidth}))")


def open_page(path: str | os.PathLike, width: int = 1280, height: int = 900, full_page: bool = False,
              timeout: float = 90.0, chromium: str | None = None) -> PageReport:
    """Load the HTML file ``path`` in headless Chromium (a fresh profile) and report what it showed.

    The screenshot is ``width`` x ``height`` CSS pixels (the first screen), or the whole page with
    ``full_page``. timeout: seconds for everything, Chromium's start included (slow on a busy machine).
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH: install it (Debian: apt-get install chromium)")
    url = Path(path).resolve().as_uri()
    # Two pipes, their ends moved to 10 and up (fcntl F_DUPFD), clear of 3 and 4: the shell below then puts
    # Chromium's ends at 3 (commands in) and 4 (answers out) without overwriting one with the other
    # (bash, as dash reads only one-digit descriptors in a redirection).
    # No preexec_fn: Python code between fork and exec is unsafe in a process with threads (torch's).
    ends = []
    for fd in os.pipe() + os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    to_r, to_w, from_r, from_w = ends
    # Chromium's own messages go to a file: a pipe nobody reads would fill up and stall it.
    with tempfile.TemporaryDirectory(prefix="minidiff-chromium-") as profile, tempfile.TemporaryFile() as said:
        flags = ["--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                 "--force-device-scale-factor=1", f"--user-data-dir={profile}", "about:blank"]
        shell = f'exec "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-'
        proc = subprocess.Popen(["bash", "-c", shell, "bash", chromium, *flags], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=said, pass_fds=(to_r, from_w))
        os.close(to_r)
        os.close(from_w)
        pipe = _Pipe(to_w, from_r, time.monotonic() + timeout)
        try:
            target = pipe.send("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session)
            pipe.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            pipe.events.clear()  # what about:blank said is not the page's
            answer = pipe.send("Page.navigate", session, url=url)
            if answer.get("errorText"):
                raise RuntimeError(f"Chromium could not open {url}: {answer['errorText']}")
            pipe.wait_for("Page.loadEventFired")  # after every <img> has loaded or failed
            images = pipe.send("Runtime.evaluate", session, expression=_IMAGES_JS, returnByValue=True)
            title = pipe.send("Runtime.evaluate", session, expression="document.title", returnByValue=True)
            page_height = pipe.send("Runtime.evaluate", session, expression="document.documentElement.scrollHeight",
                                    returnByValue=True)["result"]["value"]
            shot = {"format": "png"}
            if full_page:
                shot.update(captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": width, "height": page_height, "scale": 1})
            png = base64.b64decode(pipe.send("Page.captureScreenshot", session, **shot)["data"])
            try:
                pipe.send("Browser.close")
            except (RuntimeError, TimeoutError):
                pass  # it may close the pipe before it answers: it is going away either way
            return PageReport(images["result"]["value"], _errors(pipe.events), png, title["result"]["value"],
                              int(page_height))
        except (TimeoutError, RuntimeError, BrokenPipeError) as err:  # BrokenPipeError: it left before reading
            proc.kill()
            proc.wait()
            said.seek(0)
            last = said.read().decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{err}; Chromium said: {' | '.join(last) or 'nothing'}") from err
        finally:
            os.close(to_w)
            os.close(from_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python tests/browser.py PAGE.html [SCREENSHOT.png]")
    report = open_page(sys.argv[1])
    print(f"{report.title!r}: {len(report.images)} images, page {report.height} px high")
    for problem in report.problems():
        print(problem)
    if len(sys.argv) == 3:
        Path(sys.argv[2]).write_bytes(report.screenshot)
        print(f"screenshot: {sys.argv[2]}")
    sys.exit(1 if report.problems() else 0)
