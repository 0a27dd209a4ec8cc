"""``--serve``: an HTTP page with the annotated MJPEG stream and live statistics, for a headless device.

    GET /            the page: the stream, a live statistics table, a frame counter
    GET /stream.mjpg multipart/x-mixed-replace JPEG stream (what <img src> plays)
    GET /frame.jpg   the newest annotated frame
    GET /stats.json  the live metrics (FPS, latency percentiles, dropped frames, top-k); ``latency_from``
                     names the frame timestamp the latency starts at (``grabbed_at``); ``ended`` is
                     why the run stopped, once it has (the page then keeps the last frame)

It binds 127.0.0.1 unless told otherwise (``--serve 0.0.0.0:8080`` to view a Jetson from a
laptop). Bound to loopback, it answers only requests whose ``Host`` names it (its address or
localhost), so a page elsewhere cannot read the stream by DNS rebinding; ``--public`` lifts that
(behind a reverse proxy on the same machine). Handlers run on daemon threads, every socket has a timeout, and ``close`` ends the
streams, so the server never keeps the process alive.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge.errors import UserError

BOUNDARY = "edgeframe"
DEFAULT_HOST = "127.0.0.1"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge camera</title>
<style>
body { font-family: system-ui, sans-serif; background: #111; color: #eee; margin: 1.5em; }
img { max-width: 100%; border: 1px solid #444; }
table { border-collapse: collapse; margin-top: 1em; }
td { padding: 0.15em 1em 0.15em 0; }
#state { color: #fc6; }
</style></head>
<body>
<h1>edge camera</h1>
<p>stream: <span id="state">waiting for the first frame</span> &middot; frames shown: <span id="frames">0</span></p>
<img id="stream" src="/stream.mjpg" alt="annotated camera stream">
<table id="stats"><tbody></tbody></table>
<p id="latency-note">latency runs from when each frame was grabbed, before decode (JSONL <code>grabbed_at</code>), to its result</p>
<script>
const img = document.getElementById("stream");
img.addEventListener("load", () => {
  document.getElementById("state").textContent = "streaming " + img.naturalWidth + "x" + img.naturalHeight;
});
img.addEventListener("error", () => { document.getElementById("state").textContent = "stream ended"; });
const rows = [["top-1", s => s.top1], ["achieved FPS", s => s.achieved_fps], ["inference FPS", s => s.inference_fps],
  ["grab-to-result latency p50 / p90 / p99 (ms)", s => [s.latency_p50_ms, s.latency_p90_ms, s.latency_p99_ms].join(" / ")],
  ["inference p50 (ms)", s => s.inference_p50_ms], ["captured", s => s.captured], ["classified", s => s.classified],
  ["dropped", s => s.dropped], ["source", s => s.source], ["model", s => s.model], ["ended", s => s.ended || "-"]];
// Labels and the source string come from the model and the user: they go in as text (textContent),
// never as markup, so a label or source holding markup shows as itself and runs nothing.
function cell(text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  return td;
}
async function poll() {
  try {
    const s = await (await fetch("/stats.json", {cache: "no-store"})).json();
    document.getElementById("frames").textContent = s.classified;
    if (s.ended) {
      document.getElementById("state").textContent = "source ended (" + s.ended + "): showing the last frame";
    }
    document.querySelector("#stats tbody").replaceChildren(...rows.map(([name, f]) => {
      const tr = document.createElement("tr");
      tr.append(cell(name), cell(f(s)));
      return tr;
    }));
  } catch (e) { document.getElementById("state").textContent = "disconnected"; }
}
poll(); setInterval(poll, 500);
</script>
</body></html>
"""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> (host, port); the host defaults to 127.0.0.1."""
    host, _, port_text = str(text).rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError as exc:
        raise UserError(f"--serve {text!r}: expected HOST:PORT, :PORT or PORT (e.g. 127.0.0.1:8080)") from exc
    if not 0 <= port <= 65535:
        raise UserError(f"--serve {text!r}: port must be 0..65535 (0 picks a free one)")
    return host, port


class StreamServer:
    """Serves the newest annotated JPEG and statistics; ``publish`` from the inference loop."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0, public: bool = False):
        self._condition = threading.Condition()
        self._jpeg: bytes | None = None
        self._stats: dict[str, Any] = {}
        self._sequence = 0
        self.closing = False
        handler = _handler_for(self)
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UserError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc} (pick another port, or :0 for a free one)"
            ) from exc
        self.httpd.daemon_threads = True
        self.host, self.port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        # A page bound to loopback answers only requests that name it (or localhost): a web page the
        # viewer opens elsewhere cannot reach the stream by pointing a DNS name at 127.0.0.1
        # (DNS rebinding). Bound to another address, or with --public, any Host is answered.
        self.any_host = public or not ipaddress.ip_address(self.host).is_loopback
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="edge-camera-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def host_allowed(self, header: str | None) -> bool:
        """Does a request's ``Host`` header name this server (its address or localhost, with its port)?"""
        if self.any_host:
            return True
        if not header:
            return False
        text = header.strip().lower()
        if text.startswith("["):  # [::1]:8080 or [::1]
            name, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, port = text.partition(":")
        return (not port or port == str(self.port)) and name in {"localhost", "127.0.0.1", "::1", self.host.lower()}

    def publish(self, jpeg: bytes | None, stats: dict[str, Any]) -> None:
        with self._condition:
            if jpeg is not None:
                self._jpeg = jpeg
                self._sequence += 1
            self._stats = stats
            self._condition.notify_all()

    def snapshot(self) -> tuple[bytes | None, dict[str, Any], int]:
        with self._condition:
            return self._jpeg, dict(self._stats), self._sequence

    def wait_for_frame(self, after: int, timeout: float) -> tuple[bytes | None, int]:
        """The first frame newer than ``after`` (None on timeout or when closing)."""
        with self._condition:
            self._condition.wait_for(lambda: self.closing or self._sequence > after, timeout)
            if self.closing or self._sequence <= after:
                return None, after
            return self._jpeg, self._sequence

    def close(self) -> None:
        with self._condition:
            self.closing = True
            self._condition.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=2.0)


def _handler_for(server: StreamServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # every blocking socket operation of a request gives up after this
        server_version = "edge-camera"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            return None  # requests are not worth a log line each

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            try:
                if not server.host_allowed(self.headers.get("Host")):
                    self._send(403, "text/plain", b"this Host is not served: open the address edge camera printed\n")
                elif path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", PAGE.encode())
                elif path == "/stats.json":
                    self._send(200, "application/json", json.dumps(server.snapshot()[1]).encode())
                elif path == "/frame.jpg":
                    jpeg = server.snapshot()[0]
                    if jpeg is None:
                        self._send(503, "text/plain", b"no frame yet\n")
                    else:
                        self._send(200, "image/jpeg", jpeg)
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found: try / /stream.mjpg /frame.jpg /stats.json\n")
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                return  # the viewer went away

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            jpeg, _, sequence = server.snapshot()
            if jpeg is not None:
                self._part(jpeg)
            while not server.closing:
                jpeg, sequence = server.wait_for_frame(sequence, timeout=1.0)
                if jpeg is not None:
                    self._part(jpeg)

        def _part(self, jpeg: bytes) -> None:
            header = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            self.wfile.write(header + jpeg + b"\r\n")
            self.wfile.flush()

    return Handler
