"""Prove a bundle on the device: every artifact on every backend here over the bundle's verification set.

    edge verify runs/demo                     # an unpacked bundle (its bundle.json), or a run directory
    edge verify demo-deploy.tar.gz --junit verify.xml --markdown verify.md
    edge verify runs/demo --artifacts 'trt-*' # the engines `make engine` built

A bundle carries ``verification.npz`` (``edge pack --verify-images N``): N test images of the run's
pinned split, their labels and the float model's logits (``edge.verification_set``). Given a run
directory without a ``bundle.json``, the same set is drawn here from the run's pinned test split.
Every artifact (``model.onnx``, the INT8 models, every engine under ``engines/``, those built here
included) runs on every backend that takes it: ONNX Runtime on the CPU and on CUDA, OpenVINO on the
CPU, TensorRT for an engine built for this GPU. A backend that is not here, or an engine built for
another GPU or TensorRT, is listed n/a with the reason, not failed.

Per artifact x backend: top-1 agreement with the packed float logits (with its exact one-sided
lower bound), top-1 against the labels beside the float model's, the paired drop with the gate's
exact bounds (``edge.measure.paired``, ``edge.measure.acceptance``), and the largest logit
difference. It fails (exit 1) when

- an exact conversion (ONNX FP32 on any backend, OpenVINO FP32, TensorRT FP32/FP16 engines:
  ``edge.measure.rows.is_exact_conversion``) agrees on fewer than --min-exact-agreement (99.5%);
- an INT8 artifact (an INT8 engine: its INT8 ONNX parent) agrees less than the agreement its
  manifest says it was accepted with, beyond what n allows: the exact binomial test of
  ``edge quantize --min-agreement`` (``edge.measure.acceptance.judge_agreement``) at --confidence;
- an artifact fails to load or run, or no longer matches its manifest.

A verification set whose bytes differ from the sha256 in ``bundle.json`` is refused (one line,
exit 2). JUnit XML (--junit) and Markdown (--markdown) as ``edge check`` writes them.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.checks import Check
from bench.gate import gate_table, write_junit
from bench.host import unavailable_reason
from bench.matrix import EVAL_BATCH, batch_limits
from edge.artifact_spec import artifact_spec
from edge.atomic import atomic_write_text
from edge.errors import UserError
from edge.history import history_root, keeping_previous, replaces
from edge.manifest import Manifest, manifest_path, read_manifest
from edge.measure.acceptance import judge_agreement, judge_drop
from edge.measure.paired import CONFIDENCE, binomial_bounds, paired_flips
from edge.measure.rows import ENGINE_PREFIX, OTHER_BACKEND, TORCH_FP32, is_exact_conversion, run_artifacts
from edge.run import RunDir
from edge.runners import compatible_backends
from edge.spec import PreprocessSpec
from edge.verification_set import DEFAULT_COUNT, VerificationSet, build_verification_set, read_verification_set

DEFAULT_MIN_EXACT_AGREEMENT = 99.5  # as edge check's --min-exact-agreement
# backend -> the devices it is tried on; ONNX Runtime's TensorRT provider (ort-tensorrt) builds its own
# engines, which `edge engine` builds natively: not tried here.
BACKEND_DEVICES = {"onnxruntime": ("cpu", "cuda"), "openvino": ("cpu",), "tensorrt": ("cuda",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="an unpacked bundle (the folder with bundle.json), a bundle .tar.gz, or a run directory")
    parser.add_argument(
        "--artifacts",
        default="all",
        help="'all' or a comma list of artifact names or patterns: onnx-fp32,int8-cpu,int8-trt,'trt-*'",
    )
    parser.add_argument(
        "--verify-images",
        type=int,
        default=DEFAULT_COUNT,
        metavar="N",
        help=f"a run directory without bundle.json: test images drawn from its pinned split (default {DEFAULT_COUNT})",
    )
    parser.add_argument(
        "--min-exact-agreement",
        type=float,
        default=DEFAULT_MIN_EXACT_AGREEMENT,
        help=f"top-1 agreement in percent an exact conversion must keep with the float logits (default {DEFAULT_MIN_EXACT_AGREEMENT:g})",
    )
    parser.add_argument(
        "--confidence", type=float, default=CONFIDENCE, help="one-sided confidence of the bounds and the INT8 test (default 0.95)"
    )
    parser.add_argument("--junit", type=Path, help="write JUnit XML here (a previous file is kept under history/ beside it)")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here (a previous file is kept likewise)")


# ---- what is verified ----------------------------------------------------------------------------


@dataclass
class Target:
    """The run directory verified, the set, where the set came from, and the float model's spec."""

    run: RunDir
    vset: VerificationSet
    spec: PreprocessSpec
    source: str  # "bundle.json" or "drawn here from RUN/splits.json"


@dataclass
class Row:
    """One artifact on one backend and device; ``figures`` when it ran."""

    artifact: str  # the bench row name (openvino-fp32 for model.onnx on OpenVINO)
    file: str  # run-relative
    backend: str
    device: str
    status: str  # ok | n/a | error
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.artifact} on {self.backend}@{self.device}"


@contextmanager
def opened_target(target: str | Path, count: int = DEFAULT_COUNT, wanted: str = "all") -> Iterator[Target]:
    """A bundle (.tar.gz unpacked into a temporary folder, or a folder with bundle.json) and its set
    (checked against its sha256); a run directory and a set drawn from its pinned test split."""
    path = Path(target)
    if not path.exists():
        raise UserError(f"{path} does not exist: give an unpacked bundle, a bundle .tar.gz or a run directory")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise UserError(f"{path} is not a bundle archive (.tar.gz from `edge pack`) nor a directory")
        with tempfile.TemporaryDirectory(prefix="edge-verify-") as tmp:
            with tarfile.open(path) as archive:
                archive.extractall(tmp, filter="data")
            roots = [p.parent for p in Path(tmp).glob(f"*/{RunDir(Path(tmp)).bundle_index.name}")]
            if len(roots) != 1:
                raise UserError(f"{path} holds no bundle.json in a top folder: `edge pack` the run again")
            yield _bundle_target(RunDir(roots[0]))
        return
    run = RunDir.open(path)
    if run.bundle_index.exists():
        yield _bundle_target(run)
        return
    select(run, wanted)  # a pattern that matches nothing is told before the set is drawn
    vset, _ = build_verification_set(run, count)
    yield Target(run, vset, artifact_spec(run.onnx), f"{count} images drawn here from {run.splits}")


def _bundle_target(run: RunDir) -> Target:
    import json

    try:
        index = json.loads(run.bundle_index.read_text())
    except ValueError as exc:
        raise UserError(f"{run.bundle_index} is not readable JSON ({exc}): copy the bundle again") from exc
    info = index.get("verification") if isinstance(index, dict) else None
    if not info:
        raise UserError(
            f"{run.root} is a bundle without a verification set (packed with --verify-images 0, or from a run without a "
            "pinned test split): `edge pack` the run again with --verify-images N"
        )
    reference = run.root / info["reference_file"]
    if not reference.exists():
        raise UserError(f"{reference} is missing from the bundle: the set's logits are its; copy the bundle again")
    manifest = read_manifest(reference)
    if info.get("reference_sha256") and manifest.sha256 != info["reference_sha256"]:
        raise UserError(
            f"{reference.name} in {run.root} is not the model whose logits the verification set holds (sha256 differs from "
            "bundle.json's): `edge pack` the run again"
        )
    spec = artifact_spec(reference)
    vset = read_verification_set(run.root / info["file"], info["sha256"], spec)
    return Target(run, vset, spec, f"{len(vset)} {info['data']} {info['split']} images from {run.bundle_index.name}")


def select(run: RunDir, wanted: str) -> dict[str, Path]:
    """The run's deployable artifacts (no checkpoint) by row name, ``all`` or those the patterns match."""
    found = {name: path for name, path in run_artifacts(run).items() if name != TORCH_FP32}
    if not found:
        raise UserError(f"{run.root} has no artifacts to verify: `edge export` the run, or copy the bundle again")
    if wanted.strip() == "all":
        return found
    patterns = [p.strip() for p in wanted.split(",") if p.strip()]
    chosen = {name: path for name, path in found.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)}
    if not chosen:
        raise UserError(f"--artifacts {wanted!r} matches none of {', '.join(found)} in {run.root}")
    return chosen


def planned_rows(run: RunDir, artifacts: dict[str, Path]) -> list[Row]:
    """Every artifact x backend x device that takes it; the ones that cannot run here are n/a with the reason."""
    rows = []
    for name, path in artifacts.items():
        kind = read_manifest(path).kind if manifest_path(path).exists() else None
        for backend in compatible_backends(path, kind):
            for device in BACKEND_DEVICES.get(backend, ()):
                own = next((n for n, (of, b) in OTHER_BACKEND.items() if of == name and b == backend), name)
                reason = unavailable_reason(path, device, backend) or _engine_elsewhere(path, backend)
                status = "n/a" if reason else "planned"
                rows.append(Row(own, str(path.relative_to(run.root)), backend, device, status, reason or ""))
    return rows


def _engine_elsewhere(path: Path, backend: str) -> str | None:
    """Why an engine cannot run on this machine (built for another GPU or TensorRT), else None."""
    if backend != "tensorrt" or not manifest_path(path).exists():
        return None
    from edge.runners.tensorrt_engines import engine_compatibility, runtime_environment

    env = runtime_environment()
    result = engine_compatibility(
        read_manifest(path).to_dict(), env["tensorrt_version"], env["gpu_name"], env["compute_capability"]
    )
    return None if result.ok else f"built for another machine: {result.reason}"


# ---- running -----------------------------------------------------------------------------------


def run_row(row: Row, path: Path, target: Target) -> None:
    """Run one artifact over the set on one backend; the row gets its logits' figures or the error."""
    from edge.runners import select_runner

    try:
        spec = artifact_spec(path)
        if spec.to_dict() != target.spec.to_dict():
            raise UserError(f"its preprocess spec differs from the float model's: {spec.to_dict()} vs {target.spec.to_dict()}")
        logits = infer_all(select_runner(path, device=row.device, backend=row.backend), target, path)
    except Exception as exc:  # a row that cannot load or run is recorded, and the other rows still run
        row.status = "error"
        row.reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        return
    row.status = "ok"
    row.figures = figures(logits, target.vset)


def infer_all(runner: Any, target: Target, path: Path) -> np.ndarray:
    """Logits of every image of the set, in batches an engine's optimisation profile takes (the
    last one padded up to its minimum and cut back)."""
    manifest = read_manifest(path) if manifest_path(path).exists() else None
    low, high = batch_limits(manifest) or (1, EVAL_BATCH)
    batch = min(EVAL_BATCH, high)
    vset, out = target.vset, []
    with runner:
        for start in range(0, len(vset), batch):
            inputs = vset.inputs(target.spec, start, start + batch)
            real = len(inputs)
            if real < low:
                inputs = np.concatenate([inputs, np.repeat(inputs[-1:], low - real, axis=0)])
            out.append(np.asarray(runner.infer(inputs))[:real])
    return np.concatenate(out).astype(np.float32, copy=False)


def figures(logits: np.ndarray, vset: VerificationSet) -> dict[str, Any]:
    """Agreement with the packed float logits, top-1 against the labels, the paired drop, the largest logit difference."""
    if logits.shape != vset.logits.shape:
        raise UserError(f"logits of shape {logits.shape}, the float model's {vset.logits.shape}")
    preds, reference = np.argmax(logits, axis=1), vset.predictions()
    n, agree = len(preds), int(np.sum(preds == reference))
    return {
        "n": n,
        "agree": agree,
        "agreement": 100.0 * agree / n,
        "top1": float(np.mean(preds == vset.labels) * 100.0),
        "float_top1": float(np.mean(reference == vset.labels) * 100.0),
        "max_abs_logit_diff": float(np.max(np.abs(logits - vset.logits))),
        "predictions": preds,
    }


# ---- judging -----------------------------------------------------------------------------------


def accepted_agreement(run: RunDir, artifact: str, path: Path) -> tuple[float, int | None, str] | None:
    """(agreement %, its n, whose manifest) an INT8 artifact was accepted with; an INT8 engine's is its
    INT8 ONNX parent's. None when no manifest records one."""
    candidates = [path]
    if artifact.startswith(ENGINE_PREFIX) and manifest_path(path).exists():
        parent = read_manifest(path).parent_file
        if parent:
            candidates.append(run.root / Path(parent).name)
    for candidate in candidates:
        manifest: Manifest | None = read_manifest(candidate) if manifest_path(candidate).exists() else None
        agreement = (manifest.metrics if manifest else {}).get("agreement")
        if isinstance(agreement, (int, float)) and not isinstance(agreement, bool):
            count = manifest.metrics.get("eval_count") if manifest else None
            return float(agreement), count if isinstance(count, int) else None, candidate.name
    return None


def judge_row(row: Row, path: Path, target: Target, min_exact: float, confidence: float) -> Check:
    """The row's check: n/a (skip), an error (fail), an exact conversion's agreement floor, or an INT8
    artifact's agreement against what it was accepted with."""
    if row.status == "n/a":
        return Check(row.key, "skip", f"n/a: {row.reason}")
    if row.status == "error":
        return Check(row.key, "fail", f"did not run: {row.reason}")
    f = row.figures
    lower, _ = binomial_bounds(f["agree"], f["n"], confidence)
    flips = paired_flips(target.vset.labels, target.vset.predictions(), f["predictions"], confidence)
    shown = (
        f"agreement {f['agreement']:.2f}% ({f['n'] - f['agree']} flips of {f['n']}; lower bound {100 * lower:.2f}% at "
        f"{confidence:.0%}), top-1 {f['top1']:.2f}% vs float {f['float_top1']:.2f}%, {judge_drop(flips, math.inf).detail}, "
        f"max |logit diff| {f['max_abs_logit_diff']:.3g}"
    )
    if is_exact_conversion(row.artifact):
        ok = f["agreement"] >= min_exact
        return Check(row.key, "pass" if ok else "fail", f"{shown}; exact conversion: >= {min_exact:g}%")
    accepted = accepted_agreement(target.run, row.artifact, path)
    if accepted is None:
        return Check(row.key, "warn", f"{shown}; no accepted agreement in its manifest, nothing to hold it to")
    floor, count, whose = accepted
    reason, limit = judge_agreement(f["n"], f["n"] - f["agree"], floor, confidence, what="verification images")
    accepted_text = f"accepted with {floor:.2f}%{f' on {count} images' if count else ''} ({whose})"
    allowed = f"that agreement allows at most {limit} flips of {f['n']} at {confidence:.0%}"
    if reason:
        return Check(row.key, "fail", f"{shown}; {accepted_text}: below it beyond sampling noise ({allowed})")
    return Check(row.key, "pass", f"{shown}; {accepted_text}: {allowed}")


# ---- output ------------------------------------------------------------------------------------

COLUMNS = ("artifact", "backend", "n", "agreement %", "top-1 % (float)", "max abs logit diff", "result")


def table_lines(rows: list[Row], checks: list[Check]) -> list[tuple[str, ...]]:
    """One line per row: its figures or n/a, and the check's result."""
    lines = []
    for row, check in zip(rows, checks):
        f = row.figures
        if f:
            figures_cells = (
                str(f["n"]),
                f"{f['agreement']:.2f}",
                f"{f['top1']:.2f} ({f['float_top1']:.2f})",
                f"{f['max_abs_logit_diff']:.3g}",
            )
        else:
            figures_cells = ("n/a",) * 4
        result = check.status.upper() if check.status != "skip" else f"n/a: {row.reason}"
        lines.append((row.artifact, f"{row.backend}@{row.device}", *figures_cells, result))
    return lines


def render_markdown(target: Target, rows: list[Row], checks: list[Check]) -> str:
    out = [
        f"# edge verify: {target.run.root}",
        "",
        f"- verification set: {target.source}",
        "- agreement: top-1 agreement with the float model's packed logits; top-1 against the labels, the float model's in brackets",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in table_lines(rows, checks)]
    out += ["", "## Checks", ""]
    out += [f"- **{c.status.upper()}** {c.name}: {c.detail}" for c in checks]
    return "\n".join(out) + "\n"


def verify(target: Target, wanted: str = "all", min_exact: float = DEFAULT_MIN_EXACT_AGREEMENT, confidence: float = CONFIDENCE):
    """Every row planned, run and judged: (rows, checks), in the same order."""
    artifacts = select(target.run, wanted)
    rows = planned_rows(target.run, artifacts)
    paths = {row.key: target.run.root / row.file for row in rows}
    for row in rows:
        if row.status == "planned":
            run_row(row, paths[row.key], target)
    checks = [judge_row(row, paths[row.key], target, min_exact, confidence) for row in rows]
    if not any(row.status == "ok" for row in rows):
        checks.append(Check("anything verified", "fail", "no artifact ran on any backend here (every row n/a or error)"))
    return rows, checks


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console, make_table

    if not 0.0 <= args.min_exact_agreement <= 100.0:
        raise UserError(f"--min-exact-agreement must be a percentage in [0, 100], got {args.min_exact_agreement}")
    if not 0.5 <= args.confidence < 1.0:
        raise UserError(f"--confidence must be in [0.5, 1), got {args.confidence}")
    if args.verify_images <= 0:
        raise UserError(f"--verify-images must be positive, got {args.verify_images}")
    console = make_console()
    with opened_target(args.target, args.verify_images, args.artifacts) as target:
        rows, checks = verify(target, args.artifacts, args.min_exact_agreement, args.confidence)
        table = make_table(*COLUMNS, title=f"edge verify: {args.target} ({target.source})")
        for line in table_lines(rows, checks):
            table.add_row(*line)
        console.print(table)
        console.print(gate_table(checks, "checks"))
        writers = [
            (args.junit, lambda p: write_junit(p, checks, suite_name="edge-verify")),
            (args.markdown, lambda p: atomic_write_text(p, render_markdown(target, rows, checks))),
        ]
        for path, write in writers:
            if path is None:
                continue
            with keeping_previous(history_root(path), [path], replaces("edge verify", [path])):
                write(path)
            console.print(f"written: {path}", soft_wrap=True, highlight=False, markup=False)
    failed = [c for c in checks if c.status == "fail"]
    for check in failed:  # one greppable line each, unwrapped, for CI logs
        console.print(f"FAIL {check.name}: {check.detail}", soft_wrap=True, markup=False, highlight=False)
    ran = sum(row.status == "ok" for row in rows)
    if failed:
        console.print(f"[bold red]verify FAILED: {len(failed)} of {len(checks)} checks[/]")
        return 1
    console.print(f"[green]verify passed[/] ({ran} artifact x backend rows ran, {len(rows) - ran} n/a)")
    return 0
