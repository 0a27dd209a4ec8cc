"""The fault matrix (issue 13): every command that writes, under every fault a user meets, and every
reader, given corrupt or truncated input, answers with ONE line naming the path, exit status 2, no
traceback, nothing half-written (no temporary file, no partial target) and the old target unchanged.

Commands run in-process through ``edge.cli.main`` on a tiny pipeline built once (timm's
``test_efficientnet``, 16 px, 2 classes, a 24-image ImageFolder), so the matrix takes seconds.

How the faults are made (tests/faultsim.py):

- unwritable directory / read-only file: ``chmod`` 0555 / 0444. Root ignores modes, so as root the
  command runs with CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER dropped from the calling
  thread's effective capabilities (capset; restored afterwards): the kernel checks the modes as for
  any owner, and a real EACCES comes back from open/mkdir.
- full disk: a tmpfs mounted in the test's directory and filled to the last byte (or to 8 KiB, so
  that the disk fills up while the output is being written): a real ENOSPC (root with mount rights);
  elsewhere an ``os.fsync`` that raises ENOSPC (a full disk reported on flush, as on NFS or with
  delayed allocation) for the writes through edge.atomic.atomic_path.
- read-only file system: the tmpfs remounted read-only (EROFS); skipped where mount is refused.
- path that is a directory: a real directory at the target path.
- corrupt inputs: truncated or garbage files; manifests and reports edited to the wrong types.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from tests.faultsim import can_mount, fill, modes_bite, modes_enforced, remount_read_only, tmpfs

ARCH = "test_efficientnet"  # timm's 100k-parameter test network: builds offline, exports in a second
PX = 16
OLD = b"the old target, which a failed write must leave as it was\n"
TEMP_PREFIXES = ("edge-export-", "edge-quantize-")  # tempfile.TemporaryDirectory names of the stages


# ---- the tiny pipeline ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/ (ImageFolder, 2 classes), weights.pt, video.avi and run/ holding checkpoint.pt,
    splits.json, model.onnx, calibration/calibration.npy, model.int8-cpu.onnx and bench/report.json."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from calibration.sets import build_calibration_set
    from edge.export import export_onnx
    from edge.manifest import write_manifest
    from edge.quantize.cli import quantize_run
    from edge.spec import PreprocessSpec
    from train.checkpoint import save_checkpoint
    from train.models import build_model

    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / "data" / label).mkdir(parents=True)
        for i in range(12):
            cv2.imwrite(str(root / "data" / label / f"{i}.png"), rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    writer = cv2.VideoWriter(str(root / "video.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    for _ in range(4):
        writer.write(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    writer.release()

    import torch

    model = build_model(ARCH, num_classes=2, pretrained=False)
    torch.save(model.state_dict(), root / "weights.pt")
    run = root / "run"
    run.mkdir()
    spec = PreprocessSpec(input_size=PX, resize_size=PX, crop="resize", labels=["a", "b"])
    checkpoint = save_checkpoint(run / "checkpoint.pt", model, ARCH, spec, config={"pretrained": True})
    write_manifest(checkpoint, "checkpoint", spec, provenance={"arch": ARCH, "trained": False})
    export_onnx(run, verify_limit=2, exporter="torchscript")
    build_calibration_set(run, str(root / "data"), size=8, progress=False)  # pins splits.json too
    quantize_run(run, target="cpu", method="minmax", eval_limit=4, val_limit=4, weight_rounding="nearest", min_agreement=50)
    assert main(["bench", str(run), *BENCH_ARGS]) == 0
    return root


BENCH_ARGS = (
    "--artifacts",
    "onnx-fp32",
    "--devices",
    "cpu",
    "--batch-sizes",
    "1",
    "--warmup-s",
    "0",
    "--min-iters",
    "1",
    "--min-seconds",
    "0",
    "--single-stream",
    "0",
    "--no-end-to-end",
    "--threads",
    "1",
    "--timeout",
    "120",
)


@dataclass
class Env:
    """One test's copy of the tiny pipeline."""

    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def data(self) -> Path:
        return self.root / "data"


@pytest.fixture
def env(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    root = tmp_path / "ws"
    root.mkdir()
    # A temp folder of this test's own: the "no temporary directory left" check must not see
    # another process's (a second pytest, a bench worker elsewhere on the machine).
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    shutil.copytree(tiny / "run", root / "run")
    for name in ("data", "weights.pt", "video.avi"):
        source = tiny / name
        dest = root / name
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy(source, dest)
    return Env(root)


# ---- what every case asserts ----------------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (hidden ones too) -> sha256 of its bytes ('<dir>' for folders)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        found[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def leftovers(root: Path) -> list[str]:
    """Temporary files of atomic writes (``.NAME.xxxx.tmp``) or of the camera (``.NAME.xxxx.partial.EXT``)."""
    return [
        str(p)
        for p in root.rglob(".*")
        if p.name != ".filler" and (p.name.endswith(".tmp") or ".partial" in p.name or ".tmp" in p.name)
    ]


def stage_temp_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(TEMP_PREFIXES)}


def run_and_check(capsys: pytest.CaptureFixture[str], argv: list[str], names: Path, command: str) -> str:
    """Run ``edge ARGV``; assert exit 2 and one line on stderr naming ``names`` (or a path inside it,
    never a temporary file), with no traceback."""
    capsys.readouterr()
    before = stage_temp_dirs()
    status = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, f"exit {status}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith(f"edge {command}: error: "), line
    assert str(names) in line, f"{names} not named in: {line}"
    assert ".tmp" not in line and ".partial" not in line, f"a temporary file named: {line}"
    assert stage_temp_dirs() <= before, f"temporary directories left: {stage_temp_dirs() - before}"
    return line


# ---- faults on writes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    """A command that writes: its argv given the output path, and the file the fault hits."""

    command: str
    argv: Callable[[Env, Path], list[str]]
    name: str  # the output's file name; for ``inside`` the directory's name
    inside: str | None = None  # the output is a directory: the file written inside it that the fault hits
    needs_mount_for_enospc: bool = False  # writes outside atomic_path (the fsync fallback cannot reach it)
    big: bool = False  # the output takes more than 8 KiB (a disk with 8 KiB free fills up while writing it)


def _camera(flag: str) -> Callable[[Env, Path], list[str]]:
    def argv(env: Env, out: Path) -> list[str]:
        return ["camera", str(env.run), "--source", str(env.root / "video.avi"), "--max-frames", "2", "--quiet", flag, str(out)]

    return argv


def _train(env: Env, out: Path) -> list[str]:
    return [
        "train",
        "--out",
        str(out),
        "--data",
        str(env.data),
        "--model",
        ARCH,
        "--weights",
        str(env.root / "weights.pt"),
        "--image-size",
        str(PX),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--test-limit",
        "0",
        "--augment",
        "none",
    ]


WRITERS = {
    "train": Writer("train", _train, "newrun", inside="splits.json"),
    "export": Writer(
        "export",
        lambda env, out: ["export", str(env.run), "--out", str(out), "--exporter", "torchscript", "--verify-limit", "2"],
        "model.onnx",
        big=True,
    ),
    "calibrate": Writer(
        "calibrate", lambda env, out: ["calibrate", str(env.run), "--size", "4", "--out", str(out)], "cal.npy", big=True
    ),
    "quantize": Writer(
        "quantize",
        lambda env, out: [
            "quantize",
            str(env.run),
            "--target",
            "cpu",
            "--method",
            "minmax",
            "--weight-rounding",
            "nearest",
            "--eval-limit",
            "4",
            "--val-limit",
            "4",
            "--min-agreement",
            "50",
            "--out",
            str(out),
        ],
        "model.int8.onnx",
        big=True,
    ),
    "bench": Writer(
        "bench",
        lambda env, out: ["bench", str(env.run), *BENCH_ARGS, "--out", str(out)],
        "reports",
        inside="report.json",
        big=True,
    ),
    "check --junit": Writer(
        "check",
        lambda env, out: ["check", str(env.run / "bench" / "report.json"), "--allow-unmeasured", "--junit", str(out)],
        "junit.xml",
    ),
    "camera --record": Writer("camera", _camera("--record"), "out.avi", needs_mount_for_enospc=True),
    "camera --jsonl": Writer("camera", _camera("--jsonl"), "frames.jsonl", needs_mount_for_enospc=True),
    "pack": Writer("pack", lambda env, out: ["pack", str(env.run), "--out", str(out)], "deploy.tar.gz", big=True),
}


def _place_old_target(writer: Writer, folder: Path) -> tuple[Path, Path]:
    """The output path in ``folder`` and the file the fault hits, which holds OLD beforehand."""
    out = folder / writer.name
    if writer.inside is None:
        out.write_bytes(OLD)
        return out, out
    out.mkdir()
    (out / writer.inside).write_bytes(OLD)
    return out, out / writer.inside


@contextlib.contextmanager
def fault_unwritable_dir(env: Env, writer: Writer) -> Iterator[tuple[Path, Path, Path]]:
    """The output's directory is mode 0555 (the old target inside it)."""
    folder = env.root / "locked"
    folder.mkdir()
    out, target = _place_old_target(writer, folder)
    locked = out if writer.inside else folder
    locked.chmod(0o555)
    try:
        with modes_enforced():
            yield out, target, folder
    finally:
        locked.chmod(0o755)


@contextlib.contextmanager
def fault_target_is_dir(env: Env, writer: Writer) -> Iterator[tuple[Path, Path, Path]]:
    """The file to write is an existing directory (holding a file that must survive)."""
    folder = env.root / "out"
    folder.mkdir()
    out = folder / writer.name
    target = out / writer.inside if writer.inside else out
    target.mkdir(parents=True)
    (target / "keep.txt").write_bytes(OLD)
    yield out, target, folder


@contextlib.contextmanager
def fault_read_only_file(env: Env, writer: Writer) -> Iterator[tuple[Path, Path, Path]]:
    """The old target is mode 0444 in a writable directory."""
    folder = env.root / "out"
    folder.mkdir()
    out, target = _place_old_target(writer, folder)
    target.chmod(0o444)
    try:
        with modes_enforced():
            yield out, target, folder
    finally:
        target.chmod(0o644)


@contextlib.contextmanager
def _tmpfs(env: Env, name: str, size: str = "64k") -> Iterator[Path]:
    with tmpfs(env.root / name, size) as folder:
        yield folder


@contextlib.contextmanager
def fault_disk_full(env: Env, writer: Writer, leave: int = 0) -> Iterator[tuple[Path, Path, Path]]:
    """No space left (``leave``: but that many bytes): a filled tmpfs where mount works, else an
    fsync that raises ENOSPC."""
    if can_mount():
        with _tmpfs(env, "full", size="2m") as folder:
            out, target = _place_old_target(writer, folder)
            fill(folder, leave)
            yield out, target, folder
        return
    if writer.needs_mount_for_enospc:
        pytest.skip(f"{writer.command} writes outside atomic_path: a full disk needs a real tmpfs (root and mount)")
    folder = env.root / "full"
    folder.mkdir()
    out, target = _place_old_target(writer, folder)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", no_space)
        yield out, target, folder


@contextlib.contextmanager
def fault_read_only_fs(env: Env, writer: Writer) -> Iterator[tuple[Path, Path, Path]]:
    """A read-only file system (a tmpfs remounted ro) holding the old target."""
    if not can_mount():
        pytest.skip("a read-only file system needs root and mount (a tmpfs remounted ro)")
    with _tmpfs(env, "rofs") as folder:
        out, target = _place_old_target(writer, folder)
        remount_read_only(folder)
        yield out, target, folder


@contextlib.contextmanager
def fault_disk_fills_up(env: Env, writer: Writer) -> Iterator[tuple[Path, Path, Path]]:
    """8 KiB free: the checks before the work pass, and the disk fills up while the output is written."""
    with fault_disk_full(env, writer, leave=8192) as placed:
        yield placed


FAULTS = {
    "unwritable-dir": (fault_unwritable_dir, "permission denied"),
    "target-is-dir": (fault_target_is_dir, "is a directory"),
    "read-only-file": (fault_read_only_file, "read-only"),
    "disk-full": (fault_disk_full, "no space left on device"),
    "disk-fills-up": (fault_disk_fills_up, "no space left on device"),
    "read-only-fs": (fault_read_only_fs, "read-only file system"),
}


# Known faults in other modules, each with the fix (strict: the case fails once the fix is in,
# and the mark must then go).
KNOWN: dict[tuple[str, str], str] = {}


def _write_cases() -> list[object]:
    cases = []
    for writer, spec in WRITERS.items():
        for fault in FAULTS:
            if fault == "disk-fills-up" and not spec.big:
                continue  # its output fits in the 8 KiB left
            reason = KNOWN.get((writer, fault))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(writer, fault, marks=marks, id=f"{writer}-{fault}"))
    return cases


@pytest.mark.parametrize(("writer", "fault"), _write_cases())
def test_a_failed_write_is_one_line_and_leaves_the_old_target(env, capsys, writer, fault):
    spec = WRITERS[writer]
    make_fault, meaning = FAULTS[fault]
    if fault in ("unwritable-dir", "read-only-file") and not modes_bite():
        pytest.skip("file modes cannot be made to bite here (root without capset)")
    run_before = snapshot(env.run)
    with make_fault(env, spec) as (out, target, folder):
        before = snapshot(folder)
        # the checks before the work name the output (a run or report folder: the folder); a write
        # that fails midway names the file it was writing, in the same folder
        line = run_and_check(capsys, spec.argv(env, out), folder, spec.command)
        after = snapshot(folder)
    assert meaning in line, line
    assert after == before, f"{folder} changed: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not leftovers(env.root), leftovers(env.root)
    assert snapshot(env.run) == run_before


# The default outputs lie inside the run; a run directory the user cannot write is met by the
# write itself (atomic_path), not by the checks of the command line's options.
IN_RUN = {
    # command -> (argv, the folder of the run that is locked, the file whose write fails)
    "export": (lambda env: ["export", str(env.run), "--exporter", "torchscript", "--verify-limit", "2"], ".", "model.onnx"),
    "calibrate": (lambda env: ["calibrate", str(env.run), "--size", "4"], "calibration", "calibration/calibration.npy"),
    "quantize": (
        lambda env: [*WRITERS["quantize"].argv(env, env.root / "x")[:-2]],
        ".",
        "model.int8-cpu.layers.json",  # the per-layer report is written first
    ),
    "bench": (lambda env: ["bench", str(env.run), *BENCH_ARGS], "bench", "bench/report.json"),
    "pack": (lambda env: ["pack", str(env.run)], ".", "run-deploy.tar.gz"),
}


@pytest.mark.parametrize("command", list(IN_RUN))
def test_a_run_directory_that_cannot_be_written(env, capsys, command):
    argv, locked_name, failing = IN_RUN[command]
    if not modes_bite():
        pytest.skip("file modes cannot be made to bite here (root without capset)")
    locked = env.run / locked_name
    before = snapshot(env.run)
    locked.chmod(0o555)
    try:
        with modes_enforced():
            line = run_and_check(capsys, argv(env), env.run / failing, command)
    finally:
        locked.chmod(0o755)
    assert line.endswith("permission denied"), line
    assert snapshot(env.run) == before and not leftovers(env.root)


def test_train_into_a_path_that_is_a_file(env, capsys):
    out = env.root / "not-a-dir"
    out.write_bytes(OLD)
    line = run_and_check(capsys, _train(env, out), out, "train")
    assert "not a directory" in line and out.read_bytes() == OLD


def test_bench_into_a_path_that_is_a_file(env, capsys):
    out = env.root / "not-a-dir"
    out.write_bytes(OLD)
    line = run_and_check(capsys, ["bench", str(env.run), *BENCH_ARGS, "--out", str(out)], out, "bench")
    assert "not a directory" in line and out.read_bytes() == OLD and not leftovers(env.root)


def test_calibrate_into_proc_names_the_path(env, capsys):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    line = run_and_check(
        capsys, ["calibrate", str(env.run), "--size", "4", "--out", "/proc/cal.npy"], Path("/proc/cal.npy"), "calibrate"
    )
    assert line == "edge calibrate: error: cannot write /proc/cal.npy: no such file or directory"


def test_check_junit_into_a_directory_writes_nothing_there(env, capsys):
    folder = env.root / "ci"
    folder.mkdir()
    report = env.run / "bench" / "report.json"
    line = run_and_check(capsys, ["check", str(report), "--allow-unmeasured", "--junit", str(folder)], folder, "check")
    assert "is a directory" in line
    assert list(folder.iterdir()) == [] and not leftovers(env.root)


# ---- corrupt, truncated and mistyped inputs --------------------------------------------------------


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x89\x00\xffnot what it claims to be\x00" * 7)
    return path


def _edit_manifest(artifact: Path, **changes: object) -> Path:
    manifest = artifact.with_name(artifact.name + ".json")
    data = json.loads(manifest.read_text())
    data.update(changes)
    manifest.write_text(json.dumps(data))
    return manifest


def _replace_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


def _edit_report(path: Path, **changes: object) -> Path:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def _manifest_text(artifact: Path, text: bytes) -> Path:
    manifest = artifact.with_name(artifact.name + ".json")
    manifest.write_bytes(text)
    return manifest


@dataclass(frozen=True)
class BadInput:
    command: str
    corrupt: Callable[[Env], Path]  # damages an input, returns the path the message must name
    argv: Callable[[Env], list[str]]
    says: str = ""  # a phrase the line must hold
    may_write: tuple[str, ...] = ()  # what the command may have written (complete) before it met the bad input


def _inspect(name: str) -> Callable[[Env], list[str]]:
    return lambda env: ["inspect", str(env.run / name)]


def _quantize_argv(env: Env) -> list[str]:
    return WRITERS["quantize"].argv(env, env.root / "q.onnx")


def _bench_argv(env: Env) -> list[str]:
    return ["bench", str(env.run), *BENCH_ARGS, "--out", str(env.root / "reports")]


def _check_argv(env: Env) -> list[str]:
    return ["check", str(env.run / "bench" / "report.json"), "--allow-unmeasured"]


def _camera_argv(env: Env) -> list[str]:
    return ["camera", str(env.run), "--source", str(env.root / "video.avi"), "--max-frames", "2", "--quiet"]


def _export_argv(env: Env) -> list[str]:
    return WRITERS["export"].argv(env, env.root / "m.onnx")


def _calibrate_argv(env: Env) -> list[str]:
    return ["calibrate", str(env.run), "--size", "4", "--out", str(env.root / "c.npy")]


BAD_INPUTS = {
    # checkpoints and models
    "inspect truncated checkpoint without manifest": BadInput(
        "inspect",
        lambda env: _truncate(shutil.copy(env.run / "checkpoint.pt", env.root / "lone.pt")),
        lambda env: ["inspect", str(env.root / "lone.pt")],
        "not a readable checkpoint",
    ),
    "inspect garbage onnx without manifest": BadInput(
        "inspect",
        lambda env: _garbage(env.root / "lone.onnx"),
        lambda env: ["inspect", str(env.root / "lone.onnx")],
        "not a readable ONNX model",
    ),
    "export truncated checkpoint": BadInput(
        "export", lambda env: _truncate(env.run / "checkpoint.pt"), _export_argv, "does not match its manifest"
    ),
    "export garbage checkpoint": BadInput("export", lambda env: _garbage(env.run / "checkpoint.pt"), _export_argv),
    "quantize truncated model.onnx": BadInput("quantize", lambda env: _truncate(env.run / "model.onnx"), _quantize_argv),
    "bench truncated model.onnx": BadInput(
        "bench", lambda env: _truncate(env.run / "model.onnx"), _bench_argv, "does not match its manifest"
    ),
    "pack truncated model.onnx": BadInput(
        "pack",
        lambda env: _truncate(env.run / "model.onnx"),
        lambda env: ["pack", str(env.run), "--out", str(env.root / "b.tgz")],
        "does not match its manifest",
    ),
    "camera truncated model.onnx": BadInput("camera", lambda env: _truncate(env.run / "model.onnx"), _camera_argv),
    "train garbage --weights": BadInput(
        "train",
        lambda env: _garbage(env.root / "weights.pt"),
        lambda env: _train(env, env.root / "newrun"),
        "not a readable weights file",
        may_write=("newrun", "newrun/splits.json"),  # training pins its split before it builds the model
    ),
    # manifests
    "inspect manifest_version 'x'": BadInput(
        "inspect",
        lambda env: _edit_manifest(env.run / "model.onnx", manifest_version="x"),
        _inspect("model.onnx"),
        "manifest_version",
    ),
    "inspect environment null": BadInput(
        "inspect", lambda env: _edit_manifest(env.run / "model.onnx", environment=None), _inspect("model.onnx"), "environment"
    ),
    "inspect spec labels a number": BadInput(
        "inspect",
        lambda env: _edit_manifest(env.run / "model.onnx", spec={"input_size": 16, "resize_size": 16, "labels": 5}),
        _inspect("model.onnx"),
        "spec",
    ),
    "inspect size_bytes a string": BadInput(
        "inspect", lambda env: _edit_manifest(env.run / "checkpoint.pt", size_bytes="12"), _inspect("checkpoint.pt"), "size_bytes"
    ),
    "inspect manifest a list": BadInput(
        "inspect", lambda env: _replace_json(env.run / "model.onnx.json", [1, 2]), _inspect("model.onnx"), "JSON object"
    ),
    "inspect manifest truncated": BadInput(
        "inspect", lambda env: _truncate(env.run / "model.onnx.json"), _inspect("model.onnx"), "not a readable manifest"
    ),
    "inspect manifest binary": BadInput(
        "inspect", lambda env: _manifest_text(env.run / "model.onnx", b"\xff\xfe\x00\x81"), _inspect("model.onnx")
    ),
    "inspect run with manifest provenance a list": BadInput(
        "inspect", lambda env: _edit_manifest(env.run / "model.onnx", provenance=[1]), lambda env: ["inspect", str(env.run)]
    ),
    "export checkpoint manifest kind 3": BadInput(
        "export", lambda env: _edit_manifest(env.run / "checkpoint.pt", kind=3), _export_argv, "kind"
    ),
    "calibrate model manifest metrics null": BadInput(
        "calibrate", lambda env: _edit_manifest(env.run / "model.onnx", metrics=None), _calibrate_argv, "metrics"
    ),
    "quantize model manifest spec a string": BadInput(
        "quantize", lambda env: _edit_manifest(env.run / "model.onnx", spec="16px"), _quantize_argv, "spec"
    ),
    "quantize calibration manifest extra_files a list": BadInput(
        "quantize",
        lambda env: _edit_manifest(env.run / "calibration" / "calibration.npy", extra_files=["a"]),
        _quantize_argv,
        "extra_files",
    ),
    "bench model manifest created_at null": BadInput(
        "bench", lambda env: _edit_manifest(env.run / "model.onnx", created_at=None), _bench_argv, "created_at"
    ),
    "camera model manifest environment null": BadInput(
        "camera", lambda env: _edit_manifest(env.run / "model.onnx", environment=None), _camera_argv, "environment"
    ),
    "pack manifest extra_files a list": BadInput(
        "pack",
        lambda env: _edit_manifest(env.run / "model.onnx", extra_files=["model.onnx.data"]),
        lambda env: ["pack", str(env.run), "--out", str(env.root / "b.tar.gz")],
        "extra_files",
    ),
    "pack manifest truncated": BadInput(
        "pack",
        lambda env: _truncate(env.run / "model.int8-cpu.onnx.json"),
        lambda env: ["pack", str(env.run), "--out", str(env.root / "b.tar.gz")],
    ),
    # calibration sets and splits
    "quantize truncated calibration.npy": BadInput(
        "quantize", lambda env: _truncate(env.run / "calibration" / "calibration.npy"), _quantize_argv
    ),
    "calibrate splits.json truncated": BadInput("calibrate", lambda env: _truncate(env.run / "splits.json"), _calibrate_argv),
    # bench reports
    "check report truncated": BadInput("check", lambda env: _truncate(env.run / "bench" / "report.json"), _check_argv),
    "check report binary": BadInput("check", lambda env: _garbage(env.run / "bench" / "report.json"), _check_argv),
    "check report rows a string": BadInput(
        "check", lambda env: _edit_report(env.run / "bench" / "report.json", rows="none"), _check_argv, "rows"
    ),
    "check report environment null": BadInput(
        "check", lambda env: _edit_report(env.run / "bench" / "report.json", environment=None), _check_argv, "environment"
    ),
    "check report schema_version 'x'": BadInput(
        "check", lambda env: _edit_report(env.run / "bench" / "report.json", schema_version="x"), _check_argv
    ),
    "check baseline truncated": BadInput(
        "check",
        lambda env: _truncate(shutil.copy(env.run / "bench" / "report.json", env.root / "baseline.json")),
        lambda env: [*_check_argv(env), "--baseline", str(env.root / "baseline.json")],
    ),
    # videos
    "camera truncated video": BadInput("camera", lambda env: _garbage(env.root / "video.avi"), _camera_argv),
}


def _bad_cases() -> list[object]:
    """Each case by name; a ``pytest.param`` entry (a known fault elsewhere) keeps its marks."""
    cases = []
    for name, case in BAD_INPUTS.items():
        if isinstance(case, BadInput):
            cases.append(pytest.param(case, id=name))
        else:
            cases.append(pytest.param(*case.values, marks=case.marks, id=name))
    return cases


@pytest.mark.parametrize("bad", _bad_cases())
def test_a_corrupt_input_is_one_line_naming_it(env, capsys, bad):
    named = bad.corrupt(env)
    before = snapshot(env.root)
    line = run_and_check(capsys, bad.argv(env), named, bad.command)
    assert bad.says in line, line
    after = {k: v for k, v in snapshot(env.root).items() if k not in bad.may_write}
    assert after == before, f"written before failing: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not leftovers(env.root)


# ---- the one error path: Ctrl-C anywhere, missing packages, bugs ---------------------------------------


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "where",
    ["importing the command module", "building the parser", "parsing the arguments", "setting up logging", "running"],
)
def test_ctrl_c_anywhere_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path, where):
    import argparse

    import edge.cli
    import edge.inspect

    if where == "importing the command module":
        monkeypatch.setattr(edge.cli.importlib, "import_module", _interrupt)
    elif where == "building the parser":
        monkeypatch.setattr(edge.inspect, "add_arguments", _interrupt)
    elif where == "parsing the arguments":
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", _interrupt)
    elif where == "setting up logging":
        monkeypatch.setattr(edge.cli, "_setup_logging", _interrupt)
    else:
        monkeypatch.setattr(edge.inspect, "run", _interrupt)
    assert main(["inspect", str(tmp_path)]) == 130
    assert _one_line(capsys) == "edge inspect: interrupted"


def test_ctrl_c_before_the_command_is_known(monkeypatch, capsys):
    import edge.cli

    monkeypatch.setattr(edge.cli, "build_parser", _interrupt)
    assert main(["--verbose"]) == 130
    assert _one_line(capsys) == "edge: interrupted"


def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    import edge.inspect

    def needs_matplotlib(args: object) -> int:
        import matplotlib  # noqa: F401  (hidden below, as on a device without the train extra)

        return 0

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(edge.inspect, "run", needs_matplotlib)
    assert main(["inspect", str(tmp_path)]) == 2
    assert _one_line(capsys) == (
        "edge inspect: error: edge inspect needs the Python package 'matplotlib', which is not installed: "
        "pip install -e '.[train]' in the clone (or `make install EXTRAS=...,train`)"
    )


def test_a_bug_still_shows_its_traceback(monkeypatch, tmp_path):
    import edge.inspect

    def bug(args: object) -> int:
        return 1 // 0

    monkeypatch.setattr(edge.inspect, "run", bug)
    with pytest.raises(ZeroDivisionError):
        main(["inspect", str(tmp_path)])


def test_an_import_error_of_our_own_code_is_a_bug(monkeypatch, tmp_path):
    import edge.inspect

    def broken(args: object) -> int:
        raise ImportError("cannot import name 'x' from 'edge.spec'", name="edge.spec")

    monkeypatch.setattr(edge.inspect, "run", broken)
    with pytest.raises(ImportError):
        main(["inspect", str(tmp_path)])


def test_verbose_shows_the_traceback_of_a_one_line_error(capsys, tmp_path):
    assert main(["-v", "inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == f"edge inspect: error: {tmp_path / 'missing'} does not exist"


def test_a_multi_line_message_is_printed_as_one_line(monkeypatch, capsys, tmp_path):
    import edge.inspect
    from edge.errors import UserError

    def two_lines(args: object) -> int:
        raise UserError("first part\n  second part")

    monkeypatch.setattr(edge.inspect, "run", two_lines)
    assert main(["inspect", str(tmp_path)]) == 2
    assert _one_line(capsys) == "edge inspect: error: first part second part"


def test_the_console_script_exits_2_with_one_line_on_a_real_fault(tmp_path):
    """Through the real entry point (a subprocess): `edge check REPORT --junit DIR`."""

    report = tmp_path / "report.json"
    report.write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "edge", "check", str(report), "--junit", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"edge check: error: cannot write {tmp_path}: is a directory (give a file name)"
