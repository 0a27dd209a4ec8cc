"""The peers our INT8 model is measured against, and the measurements the figure scripts share.

Peer quantizers, each with its defaults, on the same calibration images as ``model.int8-cpu.onnx``
(the run's ``calibration/calibration.npy``, whose content hash the INT8 manifest records):
ONNX Runtime's ``quantize_static`` (QDQ, per-tensor weights, MinMax) and NNCF's ``nncf.quantize``
(ONNX backend: a QDQ ONNX file both runtimes run; ``subset_size`` = every calibration image, else
NNCF's default would use 300 of them). Both write plain ONNX files without our manifest, so their
runners are built directly with the float model's PreprocessSpec.

Two more peers for the hard-model benchmark: NNCF's ``quantize_with_accuracy_control`` on the
OpenVINO model (it reverts layers to float until a validation metric holds; written as OpenVINO IR,
which only OpenVINO runs), and NVIDIA Model Optimizer's ONNX PTQ (``modelopt.onnx.quantization``:
TensorRT-targeted QDQ). Model Optimizer installs onnxruntime-gpu, which shadows onnxruntime, so it
runs as a subprocess in a virtual environment of its own (``.venv-modelopt``, created on first use),
calibrating on the CPU.

Timing is :func:`edge.measure.timing.interleaved_rounds` (every runner for ``window_s`` in turn,
``rounds`` times, the order rotating and reversing); speed-ups are medians of per-round ratios
(:func:`edge.measure.timing.median_ratio`), with absolute milliseconds beside them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_write_text
from edge.errors import MissingDependencyError, UserError
from edge.runners.base import Runner
from edge.spec import PreprocessSpec

NNCF_HINT = "not installed (pip install -e '.[nncf]')"


def logits_over(runner: Runner, tensor: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits of an active runner over a preprocessed tensor, in batches."""
    return np.concatenate([runner.infer(np.ascontiguousarray(tensor[i : i + batch])) for i in range(0, len(tensor), batch)])


def accuracy_row(logits: np.ndarray, float_logits: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """top-1 (None without labels), drop in points vs the float model, and top-1 agreement with it, in percent."""
    pred, ref = logits.argmax(1), float_logits.argmax(1)
    top1 = None if labels is None else float(np.mean(pred == labels) * 100)
    float_top1 = None if labels is None else float(np.mean(ref == labels) * 100)
    drop = None if top1 is None or float_top1 is None else float_top1 - top1
    return {"top1": top1, "drop": drop, "agreement": float(np.mean(pred == ref) * 100), "flips": int(np.sum(pred != ref))}


def run_calibration(run: str | os.PathLike[str]) -> tuple[np.ndarray, str, str | None]:
    """The run's calibration tensor, its content hash, and the hash our INT8 model was calibrated on
    (from its manifest; None when the run has no INT8 model or the manifest does not say)."""
    from calibration.sets import load_calibration_set
    from edge.manifest import manifest_path, read_manifest
    from edge.run import RunDir

    rundir = RunDir.open(run)
    if not rundir.calibration_file.exists():
        raise UserError(f"{rundir.root} has no calibration set: run `edge calibrate {rundir.root}` first")
    calibration = load_calibration_set(rundir.root)
    ours = None
    if manifest_path(rundir.int8_cpu).exists():
        ours = (read_manifest(rundir.int8_cpu).provenance.get("calibration") or {}).get("content_hash")
    return np.asarray(calibration.tensor, dtype=np.float32), calibration.content_hash, ours


def onnx_input_name(path: str | os.PathLike[str]) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def ort_default_quantize(float_model: Path, out: Path, tensor: np.ndarray) -> float:
    """ONNX Runtime's ``quantize_static`` with every default (QDQ, per-tensor, MinMax, uint8
    activations, int8 weights), as a user calls it first; returns the seconds it took."""
    import logging

    from onnxruntime.quantization import quantize_static

    from calibration.reader import calibration_reader

    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice on the root logger, twice per call
    try:
        start = time.perf_counter()
        quantize_static(str(float_model), str(out), calibration_reader(tensor, onnx_input_name(float_model), 32))
        return time.perf_counter() - start
    finally:
        root.setLevel(level)


def nncf_default_quantize(float_model: Path, out: Path, tensor: np.ndarray) -> float:
    """NNCF's ``nncf.quantize`` with its defaults (preset performance: symmetric activations, fast
    bias correction) on the ONNX model, over every calibration image one at a time (its default
    batch); raises MissingDependencyError without nncf. Returns the seconds it took."""
    import onnx

    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError("nncf", "nncf", "The NNCF peer row") from exc
    name = onnx_input_name(float_model)
    start = time.perf_counter()
    dataset = nncf.Dataset([tensor[i : i + 1] for i in range(len(tensor))], lambda item: {name: item})
    quantized = nncf.quantize(onnx.load(str(float_model)), dataset, subset_size=len(tensor))
    onnx.save(quantized, str(out))
    return time.perf_counter() - start


def nncf_accuracy_control_quantize(
    float_model: Path, out: Path, tensor: np.ndarray, val_tensor: np.ndarray, val_labels: np.ndarray, max_drop_points: float
) -> float:
    """NNCF's ``quantize_with_accuracy_control`` on the OpenVINO model read from the float ONNX file:
    default PTQ, then layers reverted to float (most sensitive first) until top-1 on the validation
    images drops at most ``max_drop_points`` (absolute) below the float model's. Calibration over every
    calibration image; written as OpenVINO IR (``out`` .xml, weights in f32). Returns the seconds."""
    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError("nncf", "nncf", "The NNCF accuracy-control peer row") from exc
    import openvino as ov

    batches = [(val_tensor[i : i + 50], val_labels[i : i + 50]) for i in range(0, len(val_tensor), 50)]

    def validate(compiled: Any, items: Any) -> float:
        output = compiled.outputs[0]
        correct = sum(int(np.sum(compiled(x)[output].argmax(1) == y)) for x, y in items)
        return correct / sum(len(y) for _, y in batches)

    start = time.perf_counter()
    model = ov.Core().read_model(str(float_model))
    calibration = nncf.Dataset([tensor[i : i + 1] for i in range(len(tensor))])
    validation = nncf.Dataset(batches, lambda item: item[0])
    quantized = nncf.quantize_with_accuracy_control(
        model, calibration, validation, validation_fn=validate, max_drop=max_drop_points / 100, subset_size=len(tensor)
    )
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return time.perf_counter() - start


MODELOPT_VENV = ".venv-modelopt"
MODELOPT_PACKAGE = "nvidia-modelopt[onnx]"
MODELOPT_READY = ".edge-install-done"  # written into the venv once pip install finished
# Run by the Model Optimizer venv's Python: nothing of this project is imported there.
_MODELOPT_SCRIPT = """
import sys, time, numpy as np
from modelopt.onnx.quantization import quantize
source, calibration, out = sys.argv[1:4]
start = time.perf_counter()
quantize(onnx_path=source, quantize_mode="int8", calibration_data=np.load(calibration),
         calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=out)
print(f"seconds {time.perf_counter() - start}")
"""


def modelopt_python(venv: Path, create: bool = True) -> Path:
    """The Python of Model Optimizer's own venv, created (``python -m venv`` + pip install
    nvidia-modelopt[onnx]) when missing and ``create``; raises UserError when it cannot be had.
    The venv counts as ready only once its install finished (a marker file written after pip
    succeeds): one cut short, or still being made by another process, is installed into again."""
    python = venv / "bin" / "python"
    ready = venv / MODELOPT_READY
    if python.exists() and ready.exists():
        return python
    if not create:
        state = "is not finished (no marker of a completed install)" if python.exists() else "does not exist"
        raise UserError(f"{venv} {state}: the Model Optimizer row needs its own venv (drop --no-install to create it)")
    print(f"setting up {venv} for {MODELOPT_PACKAGE} (it installs onnxruntime-gpu, which would shadow onnxruntime here)")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", MODELOPT_PACKAGE], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UserError(f"{venv} could not be set up for the Model Optimizer row: {exc}") from exc
    atomic_write_text(ready, f"{MODELOPT_PACKAGE}\n")
    return python


def modelopt_quantize(float_model: Path, out: Path, tensor: np.ndarray, python: Path) -> float:
    """NVIDIA Model Optimizer's ONNX PTQ (int8, its defaults: TensorRT-targeted QDQ) of the float
    model on the calibration tensor, calibrated on the CPU in ``python`` (its venv); returns the
    seconds it took there. A failure raises UserError with its last line. Model Optimizer gets a
    copy of the float model: it writes its input back in place (the ViT's model.onnx came back with
    other bytes, its manifest no longer matching)."""
    with tempfile.TemporaryDirectory(prefix="edge-modelopt-") as tmp:
        calibration = Path(tmp) / "calibration.npy"
        np.save(calibration, np.ascontiguousarray(tensor, dtype=np.float32))
        source = Path(tmp) / float_model.name
        shutil.copyfile(float_model, source)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            [str(python), "-c", _MODELOPT_SCRIPT, str(source), str(calibration), str(out)],
            capture_output=True,
            text=True,
            env=env,
        )
    if done.returncode != 0 or not out.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"Model Optimizer's ONNX PTQ failed (exit {done.returncode}): {last}")
    seconds = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("seconds ")]
    return float(seconds[-1]) if seconds else float("nan")


def float_weighted_layers(path: Path) -> tuple[int, int]:
    """(weighted layers left in float, weighted layers) of a quantized model: ONNX Conv/Gemm/MatMul
    without a DequantizeLinear on their first input, or, in OpenVINO IR (.xml), Convolution/MatMul
    (grouped ones too) without a FakeQuantize feeding their data input."""
    if path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        weighted = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")]
        floats = [op for op in weighted if op.input_value(0).get_node().get_type_name() != "FakeQuantize"]
        return len(floats), len(weighted)
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    weighted_nodes = [node for node in graph.node if node.op_type in ("Conv", "Gemm", "MatMul")]
    floats_onnx = [node for node in weighted_nodes if producers.get(node.input[0]) != "DequantizeLinear"]
    return len(floats_onnx), len(weighted_nodes)


def peer_models(float_model: Path, tensor: np.ndarray, work: Path, with_nncf: bool = True) -> dict[str, dict[str, Any]]:
    """Quantize the float model with each peer: name -> {"path", "seconds"} or {"error": why not}."""
    peers: dict[str, dict[str, Any]] = {}
    for name, quantize in (("onnxruntime-default", ort_default_quantize), ("nncf-default", nncf_default_quantize)):
        if name == "nncf-default" and not with_nncf:
            peers[name] = {"error": "skipped (--no-nncf)"}
            continue
        out = work / f"model.int8-{name}.onnx"
        try:
            peers[name] = {"path": out, "seconds": quantize(float_model, out, tensor)}
        except MissingDependencyError:
            peers[name] = {"error": NNCF_HINT}
    return peers


def make_runner(backend: str, path: Path, spec: PreprocessSpec, threads: int | None, **options: Any) -> Runner:
    """An ONNX Runtime or OpenVINO CPU runner for any ONNX file (peer models have no manifest)."""
    if backend == "openvino":
        from edge.runners.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, spec, threads=threads, **options)
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, spec, threads=threads, **options)


@contextlib.contextmanager
def active(runners: Sequence[tuple[str, Runner]]):
    """Activate every runner, deactivate them all on the way out."""
    with contextlib.ExitStack() as stack:
        for _, runner in runners:
            stack.enter_context(runner)
        yield runners


def ort_op_profile(path: Path, batch: np.ndarray, threads: int, calls: int = 20) -> list[dict[str, Any]]:
    """ONNX Runtime's per-op-type time (its profiler, same session options as the runner) over
    ``calls`` calls, per call in ms, slowest first."""
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(calls):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            entry = totals.setdefault(event["args"].get("op_name", "?"), [0.0, 0])
            entry[0] += event["dur"] / 1000 / calls
            entry[1] += 1
    rows = [{"op": op, "kernel": "ORT CPU", "ms": ms, "layers": int(n) // calls} for op, (ms, n) in totals.items()]
    return sorted(rows, key=lambda row: -row["ms"])
