"""Open a `snakemake --report` HTML file in headless Chromium and check it the way a reader would see it.

Chromium (Debian's ``chromium`` package) is driven over the Chrome DevTools protocol with websocket-client: the
report is loaded from disk, every result is shown through the report app's own view switch (the handler its
buttons call), each image must decode (naturalWidth > 0) and each HTML table must render its rows inside the app's
iframe, and no console error, uncaught exception or failed load may be logged on the way. Screenshots are written
for a person to look at.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None (``CHROMIUM`` in the environment takes precedence)."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class Browser:
    """A headless Chromium with one page, spoken to over the DevTools protocol."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000, timeout: float = 60.0):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="gradbrain-chromium-")
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        port = self._port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as fh:
            pages = [t for t in json.load(fh) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _port(self) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def send(self, method: str, **params) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are kept in ``events``."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Block until the event ``method`` arrives (or has already arrived since the last call)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"no {method} within {self.timeout} s")

    def evaluate(self, expression: str, context: int | None = None) -> Any:
        """Evaluate JavaScript (awaiting a promise) and return its value; a thrown error fails loudly."""
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        if context is not None:
            params["contextId"] = context
        result = self.send("Runtime.evaluate", **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def poll(self, expression: str, seconds: float = 20.0) -> Any:
        """Evaluate ``expression`` until it is truthy."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"never true within {seconds} s: {expression}")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and failed loads seen so far."""
        out = []
        for event in self.events:
            method, p = event["method"], event["params"]
            if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                details = p["exceptionDetails"]
                out.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log error ({p['entry']['source']}): {p['entry']['text']}")
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                out.append(f"failed load: {p.get('errorText')}")
        return out

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


SHOW_RESULT = """
(async (path) => {
    const entry = results[path];
    const kind = entry.mime_type.startsWith("image/") ? "img" : "html";
    app.setView({content: kind, contentPath: entry.data_uri, resultPath: path});
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
        await new Promise(r => setTimeout(r, 50));
        if (kind === "img") {
            const img = [...document.querySelectorAll("img")].find(i => i.src === entry.data_uri);
            if (img && img.complete) return {kind, width: img.naturalWidth, height: img.naturalHeight};
        } else {
            const frame = [...document.querySelectorAll("iframe")].find(f => f.src === entry.data_uri);
            if (frame) return {kind, width: frame.clientWidth, height: frame.clientHeight};
        }
    }
    return {kind, width: 0, height: 0, timeout: true};
})(%s)
"""


def check_report(binary: str, report: Path, screenshots: Path) -> dict[str, Any]:
    """Open ``report`` and show each of its results in turn; return what was seen (see module docstring).

    Returns ``{"results": {path: {"kind", "width", "height", "rows"?}}, "problems": [...], "screenshots": [...]}``
    where ``rows`` counts the table rows rendered inside an HTML result's iframe.
    """
    browser = Browser(binary)
    try:
        browser.send("Page.navigate", url=report.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        browser.poll(
            "typeof app !== 'undefined' && typeof results === 'object' && "
            "document.querySelector('#app').children.length > 0"
        )
        shots = [browser.screenshot(screenshots / "report-start.png")]
        seen: dict[str, Any] = {}
        for path in browser.evaluate("Object.keys(results)"):
            seen[path] = browser.evaluate(SHOW_RESULT % json.dumps(path))
            if seen[path]["kind"] == "html":
                seen[path]["rows"] = _iframe_rows(browser)
            stem = Path(path).stem
            if stem in ("summary", "tests") or stem.endswith("brain_map"):
                shots.append(browser.screenshot(screenshots / f"report-{stem}.png"))
        time.sleep(0.5)  # let late console messages arrive
        browser.send("Runtime.evaluate", expression="1")
        return {"results": seen, "problems": browser.problems(), "screenshots": shots}
    finally:
        browser.close()


def _iframe_rows(browser: Browser) -> int:
    """Table rows inside the most recent child frame (the app shows HTML results in an iframe)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tree = browser.send("Page.getFrameTree")["frameTree"]
        children = [c["frame"] for c in tree.get("childFrames", []) if c["frame"]["url"].startswith("data:")]
        if children:
            world = browser.send("Page.createIsolatedWorld", frameId=children[-1]["id"], worldName="check")
            rows = browser.evaluate("document.querySelectorAll('tbody tr').length", world["executionContextId"])
            if rows:
                return int(rows)
        time.sleep(0.1)
    return 0
