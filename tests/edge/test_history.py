"""edge/history.py: nothing is replaced without a copy (issue 25, item 2)."""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

import pytest

from edge import history
from edge.history import forget, history_root, keep_previous, keeping_previous, kept_line, replaces
from edge.manifest import write_manifest
from edge.spec import PreprocessSpec

SPEC = PreprocessSpec(input_size=32, resize_size=32, crop="resize", labels=["a", "b"])


def _model(run: Path, name: str = "model.int8-cpu.onnx", data: bytes = b"old model") -> Path:
    """An artifact with its manifest and a layer report the manifest names."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / name
    path.write_bytes(data)
    report = path.with_name(name.removesuffix(".onnx") + ".layers.json")
    report.write_text('{"layers": []}\n')
    write_manifest(path, "onnx-int8-cpu", SPEC, extra_files=[report])
    return path


def test_kept_files_are_linked_with_their_manifest_and_extra_files(tmp_path: Path, caplog) -> None:
    model = _model(tmp_path)
    with caplog.at_level(logging.INFO):
        kept = keep_previous(tmp_path, [model], "edge quantize replaces them")
    assert kept is not None and kept.parent == tmp_path / "history" and re.fullmatch(r"\d{8}T\d{6}Z", kept.name)
    for name in ("model.int8-cpu.onnx", "model.int8-cpu.onnx.json", "model.int8-cpu.layers.json"):
        assert (tmp_path / name).is_file(), name  # still in place until the write replaces it
        assert os.path.samefile(kept / name, tmp_path / name), name
    assert [r.getMessage() for r in caplog.records] == [
        f"kept the previous model.int8-cpu.layers.json, model.int8-cpu.onnx (with their manifests) in {kept}/ "
        "(edge quantize replaces them)"
    ]


def test_where_hard_links_fail_the_files_are_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tmp_path)

    def no_links(src, dst, *args, **kwargs):  # vfat / exFAT
        raise PermissionError(errno.EPERM, "Operation not permitted", str(src), None, str(dst))

    monkeypatch.setattr(os, "link", no_links)
    kept = keep_previous(tmp_path, [model], "test")
    assert kept is not None
    assert (kept / model.name).read_bytes() == b"old model" and not os.path.samefile(kept / model.name, model)
    assert (kept / "model.int8-cpu.onnx.json").read_bytes() == (tmp_path / "model.int8-cpu.onnx.json").read_bytes()
    assert not [p for p in kept.rglob(".*")], "a temporary file is left"


def test_nothing_to_keep_makes_no_folder(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()  # a folder where a file is written: the write says so, not the keep
    assert keep_previous(tmp_path, [tmp_path / "missing.onnx", tmp_path / "model.onnx"], "test") is None
    assert not (tmp_path / "history").exists()


def test_retiring_moves_files_and_folders_at_their_relative_paths(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = _model(run, "model.onnx")
    (run / "engines" / "gpu-sm90-trt10.3.0").mkdir(parents=True)
    (run / "engines" / "gpu-sm90-trt10.3.0" / "model.fp16.engine").write_bytes(b"engine")
    kept = keep_previous(run, [model, run / "engines"], "test", retire=True)
    assert kept is not None
    assert not model.exists() and not (run / "model.onnx.json").exists() and not (run / "engines").exists()
    assert (kept / "model.onnx").read_bytes() == b"old model" and (kept / "model.layers.json").is_file()
    assert (kept / "engines" / "gpu-sm90-trt10.3.0" / "model.fp16.engine").read_bytes() == b"engine"
    assert sorted(p.name for p in run.iterdir()) == ["history"]


def test_retiring_copies_then_removes_where_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    model = _model(run, "model.onnx")
    (run / "calibration").mkdir()
    (run / "calibration" / "calibration.npy").write_bytes(b"set")

    def no_rename(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))

    monkeypatch.setattr(os, "rename", no_rename)
    kept = keep_previous(run, [model, run / "calibration"], "test", retire=True)
    assert kept is not None and not model.exists() and not (run / "calibration").exists()
    assert (kept / "model.onnx").read_bytes() == b"old model"
    assert (kept / "calibration" / "calibration.npy").read_bytes() == b"set"


@pytest.mark.parametrize("retire", [False, True])
def test_a_keep_that_fails_replaces_nothing_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retire: bool
) -> None:
    model = _model(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(history, "fsync_directory", full)
    with pytest.raises(OSError) as caught:
        keep_previous(tmp_path, [model], "test", retire=retire)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(model)
    assert caught.value.edge_action == "write"  # type: ignore[attr-defined]  # "cannot write PATH: no space left"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # every file back in place, no history/
    assert model.read_bytes() == b"old model"


def test_a_read_only_file_is_not_retired(tmp_path: Path) -> None:
    from tests.faultsim import modes_bite, modes_enforced

    if not modes_bite():
        pytest.skip("file modes cannot be made to bite here (root without capset)")
    model = _model(tmp_path, "checkpoint.pt")
    model.chmod(0o444)
    try:
        with modes_enforced(), pytest.raises(OSError) as caught:
            keep_previous(tmp_path, [model], "test", retire=True)
    finally:
        model.chmod(0o644)
    from edge.errors import os_error_line

    assert os_error_line(caught.value) == f"cannot write {model}: the file is read-only (make it writable, or write elsewhere)"
    assert model.read_bytes() == b"old model" and not (tmp_path / "history").exists()


def test_forget_drops_a_redundant_copy_and_keeps_the_only_one(tmp_path: Path) -> None:
    model = _model(tmp_path)
    kept = keep_previous(tmp_path, [model], "test")
    assert forget(kept) and not (tmp_path / "history").exists() and model.is_file()

    kept = keep_previous(tmp_path, [model], "test")
    assert kept is not None
    replacement = tmp_path / "new"
    replacement.write_bytes(b"new model")
    os.replace(replacement, model)  # the write got as far as replacing the model
    assert not forget(kept)
    assert (kept / model.name).read_bytes() == b"old model"


def test_keeping_previous_drops_the_copy_when_the_write_fails(tmp_path: Path, caplog) -> None:
    model = _model(tmp_path)
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError), keeping_previous(tmp_path, [model], "test"):
        raise RuntimeError("the write failed before replacing anything")
    assert not (tmp_path / "history").exists() and not caplog.records

    with caplog.at_level(logging.INFO), keeping_previous(tmp_path, [model], "edge quantize replaces it") as kept:
        model.write_bytes(b"new")  # (an atomic write in the stages)
    assert kept is not None and caplog.records[-1].getMessage() == kept_line(kept, "edge quantize replaces it")


def test_a_command_that_prints_its_own_lines_gets_the_line_instead_of_the_log(tmp_path: Path, caplog) -> None:
    model, other = _model(tmp_path), tmp_path / "missing.onnx"
    assert replaces("edge check", [model, other]) == "edge check replaces it"  # what is there decides
    assert replaces("edge check", [model, model.with_name("model.int8-cpu.onnx.json")]) == "edge check replaces them"
    said: list[str] = []
    with caplog.at_level(logging.INFO), keeping_previous(tmp_path, [model], "edge check replaces it", say=said.append) as kept:
        model.write_bytes(b"new")
    assert kept is not None and said == [kept_line(kept, "edge check replaces it")] and not caplog.records


def test_two_keeps_in_one_second_get_two_folders(tmp_path: Path) -> None:
    model = _model(tmp_path)
    first = keep_previous(tmp_path, [model], "test")
    second = keep_previous(tmp_path, [model], "test")
    assert first is not None and second is not None and first != second
    assert second.name.startswith(first.name)


def test_history_of_a_file_outside_the_run_is_beside_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert history_root(run / "bench" / "report.json", run) == run
    assert history_root(tmp_path / "elsewhere" / "model.onnx", run) == tmp_path / "elsewhere"
    assert history_root(tmp_path / "x.onnx") == tmp_path


def test_kept_line_names_top_level_entries_when_there_are_many(tmp_path: Path) -> None:
    folder = tmp_path / "history" / "20261206T031500Z"
    (folder / "calibration").mkdir(parents=True)
    (folder / "calibration" / "calibration.npy").write_bytes(b"")
    for name in ("checkpoint.pt", "checkpoint.pt.json", "last.pt", "splits.json", "metrics.json", "metrics.csv"):
        (folder / name).write_bytes(b"")
    for name in ("summary.json", "curves.png", "confusion.png"):
        (folder / name).write_bytes(b"")
    line = kept_line(folder, "why")
    assert line == (
        "kept the previous checkpoint.pt, confusion.png, curves.png, last.pt, metrics.csv, metrics.json, splits.json, "
        f"summary.json, calibration/ (with their manifests) in {folder}/ (why)"
    )
