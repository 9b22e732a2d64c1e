#!/usr/bin/env python3
"""Screenshot Rerun's *web* viewer showing an ``.rrd`` recording, with headless Chromium.

What it does:
  1. serves the recording itself over HTTP from this process (``/recording.rrd`` on a free
     port of 127.0.0.1, with a CORS header), and starts
     ``rerun http://127.0.0.1:FILE/recording.rrd --serve-web --bind 127.0.0.1
     --web-viewer-port WEB``, which then hosts only the web viewer (no gRPC server), and
     waits until it answers. (``rerun RECORDING.rrd --serve-web`` works too, but in
     rerun-sdk 0.41 its gRPC server spins a core at 100 % once the file is loaded, which
     slows the software-rendered browser down a lot on a small machine);
  2. starts headless Chromium on
     ``http://127.0.0.1:WEB/?url=http://127.0.0.1:FILE/recording.rrd&renderer=webgl``, with
     WebGL2 rendered in software (SwiftShader through ANGLE: no GPU needed) and every host
     name other than 127.0.0.1 made unresolvable, so nothing leaves the machine;
  3. drives Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``,
     no extra port): waits ``--wait`` seconds of real time (the viewer's wasm has to
     download, compile and stream the recording), then captures a PNG;
  4. checks that the PNG is not blank (at least 64 distinct colours; decoded with OpenCV,
     a dependency of this project: the check is skipped with a warning without it), and
     stops Chromium and rerun (whole process groups).

Needs: the ``rerun`` CLI of rerun-sdk (taken from the running interpreter's environment,
or ``$PATH``), and Chromium::

    apt-get install -y chromium        # Debian / Ubuntu package name

Run::

    python tools/rerun_screenshot.py RECORDING.rrd OUT.png [--width 1600 --height 1000 --wait 20]

Exit status: 0 on success, 2 if Chromium or rerun is missing, 1 on any other failure
(the logs of rerun and Chromium are then printed).
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Software WebGL2 via ANGLE + SwiftShader; the rest keeps headless Chromium quiet and local.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-background-networking", "--disable-sync", "--mute-audio", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def fail(msg: str, status: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_rerun() -> str | None:
    local = Path(sys.executable).with_name("rerun")
    return str(local) if local.exists() else shutil.which("rerun")


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Serves the one file ``self.server.rrd`` at ``/recording.rrd``, readable cross-origin."""

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/recording.rrd":
            self.send_error(404)
            return
        rrd: Path = self.server.rrd
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(rrd.stat().st_size))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        try:
            with rrd.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:  # keep quiet
        pass


def serve_file(rrd: Path) -> http.server.ThreadingHTTPServer:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    httpd.daemon_threads = True
    httpd.rrd = rrd
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    """Poll ``url`` until it answers 200, or fail if ``proc`` died / ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rerun exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"rerun web viewer did not answer at {url} within {timeout:.0f} s")


class PipeCDP:
    """Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``.

    Chromium reads NUL-terminated JSON messages on fd 3 and writes them on fd 4.
    """

    def __init__(self, argv: list[str], log) -> None:
        # Child ends are moved to fds >= 10 so that dup2 onto 3/4 cannot clobber them.
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()
        to_child, from_child = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child))

        def setup_fds() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(argv, preexec_fn=setup_fds, pass_fds=(3, 4),
                                     start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        for fd in (to_child, from_child):
            os.close(fd)
        self._buf, self._id = bytearray(), 0

    def call(self, method: str, session: str | None = None, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while (end := self._buf.find(b"\0")) < 0:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe (crashed?)")
                self._buf += chunk
            reply = json.loads(self._buf[:end])
            del self._buf[:end + 1]
            if reply.get("id") != self._id:  # an event: none is enabled, so ignore it
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError):
            pass
        stop(self.proc)
        os.close(self._w)
        os.close(self._r)


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL, the process group of ``proc`` (started with start_new_session).

    The group matters: ``.venv/bin/rerun`` is a Python wrapper around the real binary,
    and Chromium has helper processes.
    """
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def distinct_colours(png: bytes) -> int | None:
    """Number of distinct RGB colours of ``png``; ``None`` if OpenCV is not installed."""
    try:
        import cv2
        import numpy as np
    except ImportError:
        return None
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return len(np.unique(img.reshape(-1, 3), axis=0))


def screenshot(rrd: Path, out: Path, width: int = 1600, height: int = 1000, wait: float = 20.0,
               chromium: str | None = None, min_colours: int = 64) -> None:
    """Write a ``width`` x ``height`` PNG of the web viewer showing ``rrd`` to ``out``."""
    chromium = shutil.which(chromium) if chromium else next(
        filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium is None:
        fail("Chromium not found (tried: " + ", ".join(CHROMIUM_NAMES)
             + "); install it with `apt-get install -y chromium`.", status=2)
    rerun = find_rerun()
    if rerun is None:
        fail("the `rerun` CLI (rerun-sdk) was not found.", status=2)
    if not rrd.is_file():
        fail(f"no such recording: {rrd}")

    tmp = Path(tempfile.mkdtemp(prefix="rerun_screenshot_"))
    rerun_log, chrome_log = open(tmp / "rerun.log", "w+"), open(tmp / "chromium.log", "w+")
    httpd = serve_file(rrd.resolve())
    rrd_url = f"http://127.0.0.1:{httpd.server_address[1]}/recording.rrd"
    web_port = free_port()
    server = cdp = None
    try:
        server = subprocess.Popen(
            [rerun, rrd_url, "--serve-web", "--bind", "127.0.0.1", "--web-viewer-port", str(web_port)],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=rerun_log, stderr=rerun_log)
        base = f"http://127.0.0.1:{web_port}/"
        wait_http(base, 30, server)
        query = urllib.parse.urlencode({"url": rrd_url, "renderer": "webgl"})

        t0 = time.monotonic()
        cdp = PipeCDP([chromium, *CHROMIUM_FLAGS, "--remote-debugging-pipe",
                       f"--user-data-dir={tmp / 'profile'}", f"--window-size={width},{height}",
                       "about:blank"], chrome_log)
        page = next(t["targetId"] for t in cdp.call("Target.getTargets")["targetInfos"]
                    if t["type"] == "page")
        sid = cdp.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        cdp.call("Emulation.setDeviceMetricsOverride", session=sid, width=width, height=height,
                 deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", session=sid, url=f"{base}?{query}")
        time.sleep(wait)
        t1 = time.monotonic()
        data = base64.b64decode(cdp.call("Page.captureScreenshot", session=sid, format="png")["data"])
        t2 = time.monotonic()

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        n = distinct_colours(data)
        if n is None:
            print("warning: OpenCV not installed, blank-image check skipped", file=sys.stderr)
        elif n < min_colours:
            text = cdp.call("Runtime.evaluate", session=sid, returnByValue=True,
                            expression="document.body ? document.body.innerText : ''")["result"]
            raise RuntimeError(f"screenshot looks blank ({n} distinct colours); try a longer "
                               f"--wait. Page text: {str(text.get('value', ''))[:2000]!r}")
        print(f"wrote {out} ({width}x{height}, {n} colours; Chromium: {t2 - t0:.1f} s, "
              f"of which capture {t2 - t1:.1f} s)")
    except Exception as exc:  # report with the logs, then fail
        for name, log in (("rerun", rerun_log), ("chromium", chrome_log)):
            log.flush()
            log.seek(0)
            lines = [ln for ln in log.readlines() if "dbus" not in ln]  # dbus noise: harmless
            print(f"--- {name} log (tail) ---\n" + "".join(lines[-15:]), file=sys.stderr)
        fail(str(exc))
    finally:
        if cdp is not None:
            cdp.close()
        stop(server)
        httpd.shutdown()
        httpd.server_close()
        rerun_log.close()
        chrome_log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recording", type=Path, help=".rrd file to show")
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--wait", type=float, default=20.0,
                    help="seconds to let the viewer load and render before the capture")
    ap.add_argument("--chromium", help="Chromium executable (default: first of "
                    + ", ".join(CHROMIUM_NAMES) + " on $PATH)")
    a = ap.parse_args()
    screenshot(a.recording, a.out, a.width, a.height, a.wait, a.chromium)


if __name__ == "__main__":
    main()
