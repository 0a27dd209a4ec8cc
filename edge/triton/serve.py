"""Serve one of a run's ONNX models with a real Triton Inference Server: ``edge serve RUN``.

The server is the ``tritonserver`` binary (2.51) that PyPI's ``nvidia-pytriton`` ships, with its
Python backend only (no ONNX Runtime backend): the model is served by a Python-backend model
(:mod:`edge.triton.python_model`) that runs the artifact in ONNX Runtime. The repository it serves
is written into a temporary folder: the same inputs, outputs, labels, dynamic batching and
preprocessing parameter as ``edge triton`` writes, with ``backend: "python"``.

What it needs, checked before the server starts (each missing piece is one line):

- nvidia-pytriton installed WITHOUT its dependencies (they pin numpy < 2, which would replace this
  project's numpy): ``pip install --no-deps nvidia-pytriton==0.7.0``; only its files are used;
- the backend stub for this Python's minor version, which links the system's shared libpython
  (Debian: ``apt-get install libpython3.11``); a stub that loads another build's libpython
  (pyenv, conda) fails to start, so the stub always runs the system Python with this venv's
  site-packages added to its path.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.measure import rows
from edge.triton.config import model_config
from edge.triton.models import CONFIG, LABELS, VERSION, ModelPlan, Options
from edge.triton.pbtxt import to_pbtxt

PYTRITON_HINT = (
    "pip install --no-deps nvidia-pytriton==0.7.0 (its own dependencies would pin numpy<2: only its tritonserver is used)"
)
DEFAULT_HOST = "127.0.0.1"  # serving stays on this machine unless --host says otherwise
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServerFiles:
    binary: Path
    backends: Path  # holds python/libtriton_python.so
    stub: Path  # triton_python_backend_stub for this Python
    libs: Path  # the wheel's bundled shared libraries


SERVABLE = (rows.ONNX_FP32, rows.INT8_CPU)  # the ONNX models the CPU server runs


def server_files() -> ServerFiles:
    """The bundled server's files, or one UserError saying what to install."""
    spec = importlib.util.find_spec("pytriton")  # found, never imported: its dependencies are not installed
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"edge serve runs the tritonserver that nvidia-pytriton bundles, which is not installed: {PYTRITON_HINT}")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = ServerFiles(
        binary=root / "bin" / "tritonserver",
        backends=root / "backends",
        stub=root / "python_backend_stubs" / minor / "triton_python_backend_stub",
        libs=root.parent.parent / "nvidia_pytriton.libs",
    )
    if not files.binary.is_file() or not (files.backends / "python" / "libtriton_python.so").is_file():
        raise UserError(f"{root} has no tritonserver binary or Python backend: reinstall it ({PYTRITON_HINT})")
    if not files.stub.is_file():
        raise UserError(
            f"nvidia-pytriton has no Python backend stub for Python {minor}: use a Python it ships one for (3.8 to 3.13)"
        )
    return files


def missing_libraries(binary: Path) -> list[str]:
    """Shared libraries ``binary`` needs and the loader cannot find (``ldd``'s "not found")."""
    if shutil.which("ldd") is None:
        return []
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30).stdout
    return sorted({line.split()[0] for line in out.splitlines() if "not found" in line})


def check_runnable(files: ServerFiles) -> None:
    for binary in (files.binary, files.stub):
        missing = missing_libraries(binary)
        if missing:
            minor = f"{sys.version_info.major}.{sys.version_info.minor}"
            hint = (
                f" (the system's shared Python: apt-get install libpython{minor})"
                if any("libpython" in m for m in missing)
                else ""
            )
            raise UserError(f"{binary.name} cannot start: {', '.join(missing)} not found{hint}")


def backend_folder(files: ServerFiles, workdir: Path) -> Path:
    """A private backends/ folder: the bundled Python backend plus the stub for this Python beside it
    (the installed package is left as it is)."""
    python = workdir / "backends" / "python"
    python.mkdir(parents=True)
    for item in (files.backends / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    (python / files.stub.name).symlink_to(files.stub)
    return python.parent


def python_model_config(plan: ModelPlan, options: Options, dynamic_batching: bool = True) -> dict[str, Any]:
    """``edge triton``'s config for ``plan``, run by the Python backend (no warm-up: the stub starts
    cold anyway); without ``dynamic_batching`` each request runs alone."""
    config = model_config(plan, options)
    config.pop("platform")
    if not dynamic_batching:
        config.pop("dynamic_batching", None)
    config.pop("optimization", None)
    config.pop("model_warmup", None)
    return {"name": config.pop("name"), "backend": "python", **config}


def write_python_model(repo: Path, plan: ModelPlan, options: Options, dynamic_batching: bool = True) -> Path:
    """``repo/<model>/`` with config.pbtxt, labels.txt, 1/model.onnx and 1/model.py."""
    model_dir = repo / plan.name
    (model_dir / VERSION).mkdir(parents=True)
    shutil.copyfile(plan.files["model.onnx"], model_dir / VERSION / "model.onnx")
    template = (Path(__file__).with_name("python_model.py")).read_text()
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    code = template.replace("SITE_PACKAGES: list = []", f"SITE_PACKAGES: list = {sorted(set(site))!r}", 1)
    (model_dir / VERSION / "model.py").write_text(code)
    (model_dir / CONFIG).write_text(to_pbtxt(python_model_config(plan, options, dynamic_batching)))
    if plan.spec.labels:
        (model_dir / LABELS).write_text("".join(f"{label}\n" for label in plan.spec.labels))
    return model_dir


# ---- the server process --------------------------------------------------------------------------


@dataclass
class Server:
    """A running tritonserver (its own process group) serving one model."""

    process: subprocess.Popen
    model: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path
    workdir: Path
    host: str = DEFAULT_HOST

    @property
    def url(self) -> str:
        return f"{url_host(self.host)}:{self.http_port}"

    def bound(self) -> dict[str, list[str]]:
        """What the server really listens on, read back from the kernel: {"http": ["127.0.0.1:8000"], ...}."""
        listening = listening_sockets()
        return {
            name: sorted(listening.get(port, [])) or [f"{url_host(self.host)}:{port} (not read back)"]
            for name, port in (("http", self.http_port), ("grpc", self.grpc_port), ("metrics", self.metrics_port))
        }

    def ready(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/models/{self.model}/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(
                    f"tritonserver exited with status {self.process.returncode} before it was ready: {_log_tail(self.log)}"
                )
            if self.ready():
                return
            time.sleep(0.25)
        tail = _log_tail(self.log)
        self.stop()
        raise UserError(f"tritonserver was not ready after {timeout:.0f} s: {tail}")

    def stop(self) -> int | None:
        """SIGINT (Triton finishes in-flight requests), then SIGKILL after STOP_TIMEOUT_S; the
        work folder (repository, backend links, log) is removed. Returns the server's exit status."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)  # the repository, the backend links and the log
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _log_tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    errors = [line.strip() for line in text.splitlines() if line.startswith("E") or "error" in line.lower()]
    return " | ".join((errors or text.splitlines() or ["no output"])[-lines:])[:600]


def serve_plan(run_dir: str | os.PathLike[str], artifact: str) -> tuple[ModelPlan, Options]:
    from edge.triton.repository import plan_models

    if artifact not in SERVABLE:
        raise UserError(f"--artifact {artifact}: edge serve runs ONNX Runtime on the CPU: onnx-fp32 or int8-cpu")
    options = Options(artifacts=(artifact,))
    plans, _ = plan_models(run_dir, options)
    plan = next((p for p in plans if p.artifact == artifact), None)
    if plan is None:
        raise UserError(f"{run_dir} has no {artifact} artifact to serve (or its maker did not accept it)")
    return plan, options


def server_command(files: ServerFiles, workdir: Path, backends: Path, host: str, http_port: int) -> list[str]:
    """tritonserver's command line: HTTP, gRPC and metrics all bound to ``host`` (127.0.0.1 unless
    asked), on ``http_port`` and the two ports after it."""
    return [
        str(files.binary),
        f"--model-repository={workdir / 'repository'}",
        f"--backend-directory={backends}",
        f"--http-address={host}",
        f"--http-port={http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={http_port + 1}",
        f"--metrics-address={host}",
        f"--metrics-port={http_port + 2}",
        "--allow-gpu-metrics=false",
        "--strict-readiness=true",
    ]


def start_server(
    run_dir: str | os.PathLike[str],
    artifact: str = rows.ONNX_FP32,
    http_port: int = 8000,
    host: str = DEFAULT_HOST,
    dynamic_batching: bool = True,
) -> Server:
    """Write the Python-backend repository for ``artifact`` into a new work folder and start
    tritonserver on it (HTTP on ``http_port``, gRPC on the next port, metrics on the one after, all on
    ``host``); not yet waited for. The work folder is removed if anything fails before the server runs."""
    files = server_files()
    check_runnable(files)
    plan, options = serve_plan(run_dir, artifact)
    workdir = Path(tempfile.mkdtemp(prefix="edge-serve-"))
    try:
        backends = backend_folder(files, workdir)
        write_python_model(workdir / "repository", plan, options, dynamic_batching)
        log = workdir / "tritonserver.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                server_command(files, workdir, backends, host, http_port),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Server(process, plan.name, http_port, http_port + 1, http_port + 2, log, workdir, host)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def listening_sockets() -> dict[int, list[str]]:
    """TCP sockets in LISTEN on this machine, by port: {8000: ["127.0.0.1:8000"]} (Linux /proc/net;
    {} elsewhere)."""
    found: dict[int, list[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            packed = bytes.fromhex(address_hex)
            # /proc/net stores each 32-bit word of the address in host (little-endian) order
            packed = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
            port = int(port_hex, 16)
            address = ipaddress.ip_address(packed)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # an IPv6 socket bound to ::ffff:127.0.0.1 listens on 127.0.0.1
            found.setdefault(port, []).append(f"{url_host(str(address))}:{port}")
    return found


# ---- the command ----------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--artifact", default=rows.ONNX_FP32, choices=SERVABLE, help="the model to serve")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port; gRPC on PORT+1, metrics on PORT+2 (default 8000)")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="the address HTTP, gRPC and metrics listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--no-dynamic-batching", action="store_true", help="serve each request alone (no dynamic_batching in the config)"
    )


def run(args: Any) -> int:
    from edge.console import make_console

    if not 0 < args.port < 65534:
        raise UserError(f"--port {args.port}: give a port between 1 and 65533 (gRPC and metrics use the next two)")
    try:
        ipaddress.ip_address(args.host)
    except ValueError:
        raise UserError(f"--host {args.host!r}: give an IP address (127.0.0.1, 0.0.0.0, ::1 or one of this machine's)") from None
    console = make_console()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill`, docker stop, systemd: a clean stop too
    # Ctrl-C stops it even where it was started with SIGINT ignored (a background job of a script,
    # nohup): Python then keeps SIG_IGN, and tritonserver would inherit it. A handler here is reset
    # to the default in the child, so the server's own Ctrl-C handling (finish in-flight requests) works.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    server = None
    try:
        server = start_server(args.run, args.artifact, args.port, args.host, not args.no_dynamic_batching)
        server.wait_ready()
        bound = server.bound()
        console.print(
            f"serving {server.model}: HTTP {', '.join(bound['http'])}, gRPC {', '.join(bound['grpc'])}, "
            f"metrics {', '.join(bound['metrics'])} (/metrics); Ctrl-C stops it",
            soft_wrap=True,
        )
        exited = server.process.wait()
        raise UserError(f"tritonserver stopped by itself with status {exited}: {_log_tail(server.log)}")
    except KeyboardInterrupt:
        if server is not None:
            console.print(f"stopped {server.model} (tritonserver exit status {server.stop()})")
        return 0
    finally:
        if server is not None:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
