"""edge/atomic.py: atomic writes (modes, durability, refusals, no temporary file left) and StagedFile."""

import errno
import os
import stat

import pytest

from edge.atomic import StagedFile, atomic_path, atomic_paths, atomic_write_bytes, atomic_write_text, check_writable
from edge.errors import os_error_line
from tests.faultsim import can_mount, fill, modes_bite, modes_enforced, remount_read_only, tmpfs


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


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
