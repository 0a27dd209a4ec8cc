"""A short CUDA benchmark for `make device-check`: what this GPU machine does with what is installed.

    python -m bench.scripts.cuda_check --out DIR

Uses only torch (+ timm for the Lite0 architecture with random weights; no download, no pip) and
edge's own CUDA buffer/stream code. Prints the figures as tables and writes DIR/cuda_check.json and
DIR/cuda_check.md. Runs in well under a minute on a data-centre GPU. Without CUDA it prints one line
and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def timed(
    fn: Callable[[], Any], sync: Callable[[], None], warmup: int = 10, min_iters: int = 30, min_seconds: float = 0.5
) -> dict[str, float]:
    """Host wall-clock per call (synchronised) over at least ``min_iters`` calls and ``min_seconds``
    (``edge.measure.timing.time_calls``, after ``warmup`` calls)."""
    from edge.measure.timing import TimingWindow, time_calls

    for _ in range(warmup):
        fn()
    sync()

    def call(_: int) -> None:
        fn()
        sync()

    stats, _ = time_calls(call, TimingWindow(0.0, min_iters, min_seconds, max(60.0, min_seconds)), 1)
    return {
        "p50_ms": stats.p50_ms,
        "p90_ms": stats.p90_ms,
        "p99_ms": stats.p99_ms,
        "mean_ms": stats.mean_ms,
        "iters": stats.samples,
    }


def bandwidth(torch: Any, megabytes: int = 256) -> dict[str, float]:
    """Pinned host <-> device copy bandwidth in GB/s (CUDA events)."""
    n = megabytes * (1 << 20)
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    result = {}
    for name, (dst, src) in {"h2d_GBps": (dev, host), "d2h_GBps": (host, dev)}.items():
        dst.copy_(src, non_blocking=True)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            dst.copy_(src, non_blocking=True)
        end.record()
        end.synchronize()
        result[name] = 5 * n / (start.elapsed_time(end) / 1e3) / 1e9
    return result


def matmul_tflops(torch: Any, dtype: Any, size: int = 4096) -> float:
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    end.synchronize()
    return 20 * 2 * size**3 / (start.elapsed_time(end) / 1e3) / 1e12


def _row(path: str, batch: int, stats: dict[str, float], device_ms: list[float]) -> dict[str, Any]:
    return {
        "path": path,
        "batch": batch,
        **stats,
        "device_p50_ms": statistics.median(device_ms),
        "img_per_s": batch / stats["mean_ms"] * 1e3,
    }


def _random_batch(batch: int, input_shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)


def torch_runner_rows(torch: Any, model: Any, spec: Any, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """Lite0 through edge's TorchRunner in fp32, device time from its CUDA events."""
    from edge.runners.torch_runner import TorchRunner

    rows = []
    runner = TorchRunner("lite0-random-weights", spec, device="cuda", model=model)
    with runner:
        for batch in batches:
            x = _random_batch(batch, spec.input_shape)
            device_ms: list[float] = []

            def call(x: np.ndarray = x, device_ms: list[float] = device_ms) -> None:
                runner.infer(x)
                device_ms.append(runner.last_device_ms or 0.0)

            stats = timed(call, torch.cuda.synchronize)
            rows.append(_row("TorchRunner fp32", batch, stats, device_ms))
    return rows


def device_io_rows(torch: Any, model: Any, spec: Any, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """Lite0 in fp16 through edge's DeviceIO (the TensorRT runner's buffers and stream) with a CUDA graph."""
    from edge.runners.cuda_io import DeviceIO, TorchCuda

    half = model.cuda().half()
    cuda = TorchCuda()
    rows = []
    for batch in batches:
        out_shape = {"logits": (batch, 1000)}
        io = DeviceIO(cuda, "float16", lambda n, s=out_shape: s, {"logits": "float16"}, use_graphs=True)
        slot = io.slot((batch, *spec.input_shape))

        def enqueue(_stream: int, slot: Any = slot) -> None:
            with torch.inference_mode(), torch.cuda.stream(cuda.stream):
                slot.device_out["logits"].copy_(half(slot.device_in))

        x = _random_batch(batch, spec.input_shape)
        device_ms: list[float] = []

        def call_io(x: np.ndarray = x, io: DeviceIO = io, enqueue: Any = enqueue, device_ms: list[float] = device_ms) -> None:
            _, ms = io.run(x, lambda slot: None, enqueue)
            device_ms.append(ms)

        stats = timed(call_io, cuda.synchronize)
        graph = "graph" if io.slots[batch].graph is not None else f"no graph ({io.graph_failures.get(batch)})"
        rows.append(_row(f"DeviceIO fp16 {graph}", batch, stats, device_ms))
    return rows


def lite0_rows(torch: Any, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """Lite0 (random weights) through edge's TorchRunner, fp32 and fp16, and through DeviceIO with a CUDA graph."""
    import timm

    from edge.spec import PreprocessSpec

    spec = PreprocessSpec(input_size=224, resize_size=256, labels=tuple(str(i) for i in range(1000)))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    return torch_runner_rows(torch, model, spec, batches) + device_io_rows(torch, model, spec, batches)


def _cuda_torch() -> Any | None:
    """torch when it sees a CUDA device; otherwise prints why not (to stderr) and returns None."""
    if importlib.util.find_spec("torch") is None:
        print("cuda_check: torch is not installed, so there is no CUDA to check here", file=sys.stderr)
        return None
    import torch

    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device visible (torch.cuda.is_available() is False); nothing to measure", file=sys.stderr)
        return None
    return torch


def device_info(torch: Any) -> dict[str, Any]:
    """The GPU, the CUDA stack and what else can use it (TensorRT, ONNX Runtime providers)."""
    from edge.runners import tensorrt_available

    major, minor = torch.cuda.get_device_capability(0)
    ort_providers: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        ort_providers = list(onnxruntime.get_available_providers())
    return {
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
        "memory_GiB": round(torch.cuda.get_device_properties(0).total_memory / (1 << 30), 1),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tensorrt": tensorrt_available(),
        "onnxruntime_providers": ort_providers,
    }


def measure(torch: Any, batches: tuple[int, ...]) -> dict[str, Any]:
    """Every figure of the check, with the device and the environment."""
    from edge.environment import environment_fingerprint

    started = time.perf_counter()
    device = device_info(torch)
    torch.backends.cudnn.benchmark = True
    figures = {
        **bandwidth(torch),
        "fp32_matmul_TFLOPS": matmul_tflops(torch, torch.float32),
        "fp16_matmul_TFLOPS": matmul_tflops(torch, torch.float16),
    }
    rows = lite0_rows(torch, batches) if importlib.util.find_spec("timm") is not None else []
    return {
        "device": device,
        "figures": figures,
        "lite0": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "environment": environment_fingerprint(),
    }


def print_tables(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    device, figures, rows = result["device"], result["figures"], result["lite0"]
    table = Table(title=f"CUDA check: {device['gpu']} (sm{device['compute_capability'].replace('.', '')})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in {**device, **figures}.items():
        table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    console.print(table)
    lite = Table(title="Lite0 (random weights) on CUDA")
    for column in ("path", "batch", "p50 ms", "p99 ms", "device p50 ms", "img/s"):
        lite.add_column(column, justify="right" if column != "path" else "left")
    for row in rows:
        lite.add_row(
            row["path"],
            str(row["batch"]),
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['device_p50_ms']:.2f}",
            f"{row['img_per_s']:.0f}",
        )
    console.print(lite)


def markdown(result: dict[str, Any]) -> str:
    device, figures, rows = result["device"], result["figures"], result["lite0"]
    lines = [f"# CUDA check: {device['gpu']}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in {**device, **figures}.items()]
    lines += ["", "| path | batch | p50 ms | p99 ms | device p50 ms | img/s |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['path']} | {r['batch']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['device_p50_ms']:.2f} | {r['img_per_s']:.0f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scripts.cuda_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/device-check", help="folder for cuda_check.json / .md")
    parser.add_argument("--batches", default="1,8,32", help="Lite0 batch sizes")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    torch = _cuda_torch()
    if torch is None:
        return 2
    from rich.console import Console

    from edge.atomic import atomic_write_json, atomic_write_text

    result = measure(torch, batches)
    console = Console()
    print_tables(console, result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "cuda_check.json", result)
    atomic_write_text(out / "cuda_check.md", markdown(result))
    console.print(f"wrote {out / 'cuda_check.json'} and {out / 'cuda_check.md'} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
