import errno
import json
import os
import stat

import numpy as np
import pytest

from edge.atomic import StagedFile, atomic_path, atomic_paths, atomic_write_bytes, atomic_write_text, check_writable, sha256_file
from edge.environment import environment_fingerprint
from edge.errors import UserError, missing_module_line, os_error_line
from edge.lineage import artifact_parent, is_stale, lineage, stale_link, stale_reason
from edge.manifest import MANIFEST_FIELDS, manifest_path, read_manifest, update_metrics, validate_manifest, write_manifest
from edge.spec import PreprocessSpec
from edge.verify import verify_file
from tests.faultsim import can_mount, fill, modes_bite, modes_enforced, remount_read_only, tmpfs

SPEC = PreprocessSpec(input_size=32, resize_size=32, crop="resize", labels=["a", "b"])


@pytest.fixture
def artifact(tmp_path):
    parent = tmp_path / "checkpoint.pt"
    parent.write_bytes(b"parent weights")
    write_manifest(parent, "checkpoint", SPEC)
    child = tmp_path / "model.onnx"
    child.write_bytes(b"onnx bytes")
    write_manifest(child, "onnx", SPEC, parent=parent, provenance={"opset": 18}, metrics={"max_abs_diff": 1e-6})
    return parent, child


def test_manifest_records_hashes_spec_and_environment(artifact):
    parent, child = artifact
    manifest = read_manifest(child)
    assert manifest.sha256 == sha256_file(child)
    assert manifest.parent_sha256 == sha256_file(parent)
    assert manifest.parent_file == "checkpoint.pt"
    assert manifest.preprocess_spec == SPEC
    assert manifest.provenance == {"opset": 18}
    env = manifest.environment
    for key in ("cpu_model", "cpu_count", "cpu_flags", "packages", "python", "machine_fingerprint"):
        assert key in env
    assert "numpy" in env["packages"]


def test_schema_fails_on_missing_field(artifact):
    _, child = artifact
    data = json.loads(manifest_path(child).read_text())
    del data["metrics"]
    with pytest.raises(UserError, match=r"missing \['metrics'\]"):
        validate_manifest(data)


def test_schema_fails_on_unknown_field(artifact):
    _, child = artifact
    data = json.loads(manifest_path(child).read_text())
    data["colour"] = "blue"
    with pytest.raises(UserError, match=r"unknown \['colour'\]"):
        validate_manifest(data)


def test_schema_fields_are_exactly_the_documented_set():
    expected = {
        "kind",
        "file",
        "sha256",
        "size_bytes",
        "parent_sha256",
        "parent_file",
        "spec",
        "provenance",
        "metrics",
        "environment",
        "created_at",
        "extra_files",
        "manifest_version",
    }
    assert expected - MANIFEST_FIELDS == set() and MANIFEST_FIELDS - expected == set()


def test_unknown_kind_is_rejected(artifact):
    _, child = artifact
    data = json.loads(manifest_path(child).read_text())
    data["kind"] = "tflite"
    with pytest.raises(UserError, match="unknown artifact kind 'tflite'"):
        validate_manifest(data)


def test_stale_when_parent_changes_and_not_when_parent_absent(artifact):
    parent, child = artifact
    assert is_stale(child, parent) is False
    parent.write_bytes(b"retrained weights")
    write_manifest(parent, "checkpoint", SPEC)
    assert is_stale(child, parent) is True
    parent.unlink()
    assert is_stale(child, parent) is None


@pytest.fixture
def chain(tmp_path):
    """checkpoint.pt -> model.onnx -> model.int8-trt.onnx -> engines/<machine>/model.int8.engine, as
    the stages write them (any bytes: staleness reads manifests and hashes only)."""
    run = tmp_path / "run"
    run.mkdir()
    files = {
        "checkpoint": (run / "checkpoint.pt", "checkpoint", None, {}),
        "onnx": (run / "model.onnx", "onnx", run / "checkpoint.pt", {}),
        "int8": (run / "model.int8-trt.onnx", "onnx-int8-trt", run / "model.onnx", {}),
        "engine": (
            run / "engines" / "h200-sm90-trt10.13.0" / "model.int8.engine",
            "engine",
            run / "model.int8-trt.onnx",
            {"precision": "int8"},
        ),
    }
    for name, (path, kind, parent, provenance) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{name} v1".encode())
        write_manifest(path, kind, SPEC, parent=parent, provenance=provenance, environment={})
    return {name: entry[0] for name, entry in files.items()}


def retrain(path):
    path.write_bytes(b"another training run")
    write_manifest(path, "checkpoint", SPEC, environment={})


def test_the_parent_is_the_one_the_manifest_records_in_the_run(chain):
    assert artifact_parent(chain["engine"]) == chain["int8"]  # two folders up: engines/<machine>/
    assert artifact_parent(chain["int8"]) == chain["onnx"]
    assert artifact_parent(chain["checkpoint"]) is None
    assert lineage(chain["engine"]) == [chain["engine"], chain["int8"], chain["onnx"], chain["checkpoint"]]


def test_a_current_chain_has_no_stale_link(chain):
    assert all(stale_reason(path) is None for path in chain.values())


def test_staleness_passes_down_the_chain(chain):
    retrain(chain["checkpoint"])
    for name in ("onnx", "int8", "engine"):
        link = stale_link(chain[name])
        assert link is not None and (link.artifact, link.parent) == (chain["onnx"], chain["checkpoint"])
    assert stale_link(chain["checkpoint"]) is None
    assert is_stale(chain["int8"], chain["onnx"]) is False  # one link alone still holds
    run = chain["checkpoint"].parent
    reason = stale_reason(chain["engine"])
    assert reason is not None
    assert reason.startswith("model.onnx was exported from a different checkpoint.pt (sha256 ")
    assert reason.endswith(
        f"re-run `edge export {run}`, then `edge quantize {run} --target trt`, then `edge engine {run} --precision int8`"
    )


def test_the_stale_link_nearest_the_root_is_named(chain):
    """Both the checkpoint and the INT8 model changed: remaking starts at the export."""
    retrain(chain["checkpoint"])
    chain["int8"].write_bytes(b"requantized from elsewhere")
    write_manifest(chain["int8"], "onnx-int8-trt", SPEC, parent=chain["onnx"], environment={})
    link = stale_link(chain["engine"])
    assert link is not None and link.artifact == chain["onnx"]
    chain["checkpoint"].unlink()  # the root gone: only the engine's own link is left to break
    assert stale_link(chain["engine"]).artifact == chain["engine"]


def test_a_parent_replaced_behind_its_own_manifest_makes_the_child_stale(chain):
    recorded = read_manifest(chain["onnx"]).parent_sha256
    chain["checkpoint"].write_bytes(b"copied over, manifest left as it was")
    reason = stale_reason(chain["int8"])
    assert reason is not None and f"sha256 {recorded[:12]}.. recorded, {sha256_file(chain['checkpoint'])[:12]}.. now" in reason


def test_an_absent_parent_or_a_missing_manifest_is_not_stale(chain):
    """A device holding only the engine (and its manifest) cannot judge it: not stale."""
    retrain(chain["checkpoint"])
    chain["onnx"].unlink()
    assert stale_reason(chain["int8"]) is None and stale_reason(chain["engine"]) is None
    assert stale_reason(chain["checkpoint"].parent / "nothing.onnx") is None
    manifest_path(chain["int8"]).unlink()
    assert stale_reason(chain["int8"]) is None and lineage(chain["engine"]) == [chain["engine"], chain["int8"]]


def test_update_metrics_merges(artifact):
    _, child = artifact
    update_metrics(child, {"top1": 0.9})
    assert read_manifest(child).metrics == {"max_abs_diff": 1e-6, "top1": 0.9}


def test_verify_file_detects_a_changed_artifact(artifact):
    _, child = artifact
    child.write_bytes(b"tampered")
    with pytest.raises(UserError, match="does not match its manifest"):
        verify_file(child)


def test_missing_manifest_names_the_fix(tmp_path):
    lone = tmp_path / "x.onnx"
    lone.write_bytes(b"")
    with pytest.raises(UserError, match="has no manifest"):
        read_manifest(lone)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_environment_fingerprint_lists_cpu_flags():
    env = environment_fingerprint()
    assert isinstance(env["cpu_flags"], list)
    assert env["cpu_count"] >= 1
    assert len(env["machine_fingerprint"]) == 16


# ---- atomic writes: modes, durability, refusals, no temporary file left (issue 13) --------------------


@pytest.fixture
def umask():
    """Set the process umask for a test; restored after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda value: os.umask(value)
    os.umask(previous)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_text(tmp_path / "report.md", "hello")
    with atomic_path(tmp_path / "model.onnx") as tmp:  # a writer that truncates and rewrites the path
        tmp.write_bytes(b"onnx")
    assert _mode(tmp_path / "report.md") == expected
    assert _mode(tmp_path / "model.onnx") == expected


def test_a_writer_that_replaces_the_temporary_file_still_gets_the_umask_mode(tmp_path, umask):
    umask(0o022)
    with atomic_path(tmp_path / "x.bin") as tmp:
        other = tmp_path / "elsewhere"
        other.write_bytes(b"data")
        other.chmod(0o600)
        os.replace(other, tmp)
    assert _mode(tmp_path / "x.bin") == 0o644


def test_the_file_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(kind)
        real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append("rename")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "a.json", "{}")
    assert events == ["file", "rename", "dir"]


def test_the_temporary_file_is_in_the_targets_own_directory(tmp_path, monkeypatch):
    seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, **kwargs):
        seen.append(str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    atomic_write_text(tmp_path / "sub" / "junit.xml", "<x/>")
    created = [p for p in seen if p.endswith(".tmp")]
    assert created and all(os.path.dirname(p) == str(tmp_path / "sub") for p in created)
    assert _names(tmp_path / "sub") == ["junit.xml"]


def test_a_directory_target_is_refused_before_anything_is_written(tmp_path):
    """`edge check --junit /tmp` once made its temporary file in `/`: a directory target is refused first."""
    target = tmp_path / "ci"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        atomic_write_text(target, "<x/>")
    assert caught.value.filename == str(target) and caught.value.edge_action == "write"
    assert os_error_line(caught.value) == f"cannot write {target}: is a directory (give a file name)"
    assert _names(tmp_path) == ["ci"] and _names(target) == []


def test_a_missing_place_names_the_target_not_the_temporary(tmp_path):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    with pytest.raises(FileNotFoundError) as caught:
        atomic_write_bytes("/proc/cal.npy", b"x")
    assert os_error_line(caught.value) == "cannot write /proc/cal.npy: no such file or directory"


def test_a_file_where_a_directory_must_be(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as caught:
        atomic_write_text(tmp_path / "file" / "out.json", "{}")
    assert caught.value.filename == str(tmp_path / "file" / "out.json")


@pytest.mark.skipif(not modes_bite(), reason="file modes cannot be made to bite here (root without capset)")
def test_an_unwritable_directory_names_the_target_and_leaves_nothing(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    atomic_write_text(folder / "out.json", "old")
    folder.chmod(0o555)
    try:
        with modes_enforced(), pytest.raises(PermissionError) as caught:
            atomic_write_text(folder / "out.json", "new")
    finally:
        folder.chmod(0o755)
    assert os_error_line(caught.value) == f"cannot write {folder / 'out.json'}: permission denied"
    assert _names(folder) == ["out.json"] and (folder / "out.json").read_text() == "old"


@pytest.mark.skipif(not modes_bite(), reason="file modes cannot be made to bite here (root without capset)")
def test_a_read_only_target_is_refused_and_kept(tmp_path):
    target = tmp_path / "baseline.json"
    target.write_text("old")
    target.chmod(0o444)
    try:
        with modes_enforced(), pytest.raises(PermissionError) as caught:
            atomic_write_text(target, "new")
    finally:
        target.chmod(0o644)
    assert "the file is read-only" in os_error_line(caught.value)
    assert target.read_text() == "old" and _names(tmp_path) == ["baseline.json"]


def test_a_full_disk_while_writing_names_the_target_and_keeps_the_old_file(tmp_path, monkeypatch):
    """ENOSPC on flush (the fsync before the rename): simulated in-process on any machine."""
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"new" * 1000)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert os_error_line(caught.value).startswith(f"cannot write {target}: no space left on device")
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["model.onnx"]


@pytest.mark.skipif(not can_mount(), reason="a real full disk needs root and mount (a tmpfs)")
def test_a_real_full_disk_and_a_cpp_writer(tmp_path):
    """A 64 KiB tmpfs filled to the last byte: Python writers get ENOSPC; a writer that reports it
    as another exception (torch.save says RuntimeError) is told apart by the free space left."""
    with tmpfs(tmp_path / "full") as folder:
        (folder / "old.bin").write_bytes(b"old")
        fill(folder)
        with pytest.raises(OSError) as caught:
            atomic_write_bytes(folder / "old.bin", b"x" * 10000)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder / "old.bin")
        with pytest.raises(OSError) as caught, atomic_path(folder / "new.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # torch.save's words
        assert caught.value.errno == errno.ENOSPC and isinstance(caught.value.__cause__, RuntimeError)
        assert (folder / "old.bin").read_bytes() == b"old"
        assert _names(folder) == [".filler", "old.bin"]


@pytest.mark.skipif(not can_mount(), reason="a read-only file system needs root and mount (a tmpfs remounted ro)")
def test_a_read_only_file_system(tmp_path):
    with tmpfs(tmp_path / "ro") as folder:
        (folder / "old.bin").write_bytes(b"old")
        remount_read_only(folder)
        for target in (folder / "old.bin", folder / "new.bin"):
            with pytest.raises(OSError) as caught:
                atomic_write_bytes(target, b"new")
            assert os_error_line(caught.value) == f"cannot write {target}: read-only file system"
        assert _names(folder) == ["old.bin"]


def test_an_input_error_inside_the_block_keeps_its_own_path(tmp_path):
    with pytest.raises(FileNotFoundError) as caught, atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes((tmp_path / "missing-input").read_bytes())
    assert caught.value.filename == str(tmp_path / "missing-input")
    assert not hasattr(caught.value, "edge_action") and _names(tmp_path) == []


def test_a_keyboard_interrupt_leaves_no_temporary_file(tmp_path):
    atomic_write_text(tmp_path / "out.bin", "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert _names(tmp_path) == ["out.bin"] and (tmp_path / "out.bin").read_text() == "old"


def test_atomic_paths_renames_all_or_none(tmp_path):
    json_path, png_path = tmp_path / "report.json", tmp_path / "report.png"
    for path in (json_path, png_path):
        path.write_text("old")
    with pytest.raises(RuntimeError), atomic_paths(json_path, png_path) as (tmp_json, tmp_png):
        tmp_json.write_text("new")
        raise RuntimeError("the PNG failed")
    assert json_path.read_text() == png_path.read_text() == "old" and len(_names(tmp_path)) == 2
    with atomic_paths(json_path, png_path) as (tmp_json, tmp_png):
        tmp_json.write_text("new json")
        tmp_png.write_text("new png")
    assert (json_path.read_text(), png_path.read_text()) == ("new json", "new png")
    assert _names(tmp_path) == ["report.json", "report.png"]


def test_check_writable_refuses_before_the_work_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    check_writable(tmp_path / "new" / "deeper" / "out.onnx")  # missing folders are created later
    check_writable(tmp_path / "new-run", directory=True)
    check_writable(tmp_path / "dir", directory=True)
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path / "dir")
    with pytest.raises(NotADirectoryError) as caught:
        check_writable(tmp_path / "file", directory=True)
    assert os_error_line(caught.value) == f"cannot write {tmp_path / 'file'}: exists and is not a directory"
    with pytest.raises(NotADirectoryError):
        check_writable(tmp_path / "file" / "x.json")
    assert _names(tmp_path) == ["dir", "file"] and _names(tmp_path / "dir") == []


@pytest.mark.skipif(not can_mount(), reason="a full disk needs root and mount (a tmpfs)")
def test_check_writable_refuses_a_full_disk(tmp_path):
    with tmpfs(tmp_path / "full") as folder:
        fill(folder)
        with pytest.raises(OSError) as caught:
            check_writable(folder / "report.json")
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder / "report.json")


# ---- manifests of the wrong shape are user errors naming the file and the field ---------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("manifest_version", "x", "'manifest_version' must be a whole number, not a string"),
        ("manifest_version", True, "'manifest_version' must be a whole number, not a boolean"),
        ("manifest_version", 0, "manifest version 0 is not a version"),
        ("environment", None, "'environment' must be an object, not null"),
        ("provenance", [], "'provenance' must be an object, not a list"),
        ("metrics", "fast", "'metrics' must be an object, not a string"),
        ("size_bytes", "12", "'size_bytes' must be a whole number, not a string"),
        ("size_bytes", -1, "'size_bytes' is negative"),
        ("sha256", 12, "'sha256' must be a string, not a number"),
        ("kind", None, "'kind' must be a string, not null"),
        ("parent_sha256", 1.5, "'parent_sha256' must be a string or null, not a number"),
        ("created_at", None, "'created_at' must be a string"),
        ("extra_files", ["a"], "'extra_files' must be an object, not a list"),
        ("extra_files", {"a.data": 3}, "'extra_files' must map file names to sha256 strings"),
        ("spec", "16px", "'spec' must be an object or null, not a string"),
        ("spec", {"input_size": "x", "resize_size": 16}, "'spec' is not a valid preprocess spec"),
        ("spec", {"input_size": 16, "resize_size": 16, "labels": 5}, "'spec' is not a valid preprocess spec"),
        ("spec", {"input_size": 16, "resize_size": 16, "mean": "abc"}, "'spec' is not a valid preprocess spec"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_a_user_error(artifact, field, value, message):
    _, child = artifact
    path = manifest_path(child)
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as caught:
        read_manifest(child)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not a readable manifest"),
        (b'{"kind": "onnx", "fi', "is not a readable manifest"),
        (b"\xff\xfe\x00\x81garbage", "is not a readable manifest"),
        (b"[1, 2]", "a manifest must be a JSON object, not a list"),
        (b"null", "a manifest must be a JSON object, not null"),
    ],
)
def test_a_corrupt_manifest_is_a_user_error(artifact, content, message):
    _, child = artifact
    manifest_path(child).write_bytes(content)
    with pytest.raises(UserError) as caught:
        read_manifest(child)
    assert str(manifest_path(child)) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_manifest_that_is_a_directory_is_a_user_error(tmp_path):
    lone = tmp_path / "x.onnx"
    lone.write_bytes(b"")
    manifest_path(lone).mkdir()
    with pytest.raises(UserError, match="cannot read the manifest .*: is a directory"):
        read_manifest(lone)


# ---- the one-line messages ----------------------------------------------------------------------------


def test_os_error_lines():
    assert os_error_line(PermissionError(errno.EACCES, "Permission denied", "/x")) == "/x: permission denied"
    assert os_error_line(OSError(errno.EROFS, "Read-only file system", "/x", None, "/y")) == "/x -> /y: read-only file system"
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device")) == (
        "no space left on device (free some space or write elsewhere)"
    )
    assert os_error_line(OSError("a library's own words")) == "a library's own words"
    written = OSError(errno.EDQUOT, "Disk quota exceeded", "/x")
    written.edge_action = "write"
    assert os_error_line(written).startswith("cannot write /x: disk quota exceeded")


def test_missing_module_lines_name_the_extra():
    line = missing_module_line(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"), "edge bench")
    assert line == (
        "edge bench needs the Python package 'matplotlib', which is not installed: "
        "pip install -e '.[train]' in the clone (or `make install EXTRAS=...,train`)"
    )
    assert "opencv-python" in missing_module_line(ModuleNotFoundError(name="cv2"))
    assert "[cpu]" in missing_module_line(ModuleNotFoundError(name="onnxruntime.quantization"))
    assert missing_module_line(ModuleNotFoundError(name="edge.nonexistent")) is None


def test_a_staged_file_for_long_lived_writers(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "frames.jsonl"
    target.write_text("old\n")
    staged = StagedFile(target)
    with open(staged.create(), "w") as handle:
        handle.write('{"frame": 0}\n')
    assert target.read_text() == "old\n"  # nothing moves before commit
    staged.flush()
    assert staged.commit() == target and target.read_text() == '{"frame": 0}\n' and _mode(target) == 0o644
    abandoned = StagedFile(target)
    abandoned.create().write_text("half")
    abandoned.discard()
    abandoned.discard()
    assert _names(tmp_path) == ["frames.jsonl"] and target.read_text() == '{"frame": 0}\n'
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        StagedFile(tmp_path / "dir.jsonl").create()
    assert os_error_line(caught.value) == f"cannot write {tmp_path / 'dir.jsonl'}: is a directory (give a file name)"


def test_a_reader_refuses_a_file_that_no_longer_matches_its_manifest(tmp_path):
    """select_runner (bench workers, camera, selftest) checks the pair once per file and process."""
    from edge.runners import select_runner
    from tests.edge.tensorrt.test_build import SPEC, tiny_onnx

    run = tmp_path / "run"
    run.mkdir()
    model = tiny_onnx(run / "model.onnx")
    write_manifest(model, "onnx", SPEC, environment={"hostname": "t"})
    with select_runner(model, "cpu") as runner:
        assert runner.infer(np.zeros((1, *SPEC.input_shape), np.float32)).shape == (1, len(SPEC.labels))
    model.write_bytes(model.read_bytes()[:-20])  # cut short after its manifest was written
    with pytest.raises(UserError, match=rf"model.onnx does not match its manifest model.onnx.json .* `edge export {run}`"):
        select_runner(run, "cpu")
    bare = tiny_onnx(tmp_path / "bare.onnx")  # a user's own model without a manifest: nothing to check
    with select_runner(bare, "cpu") as runner:
        assert runner.infer(np.zeros((2, *SPEC.input_shape), np.float32)).shape == (2, len(SPEC.labels))
