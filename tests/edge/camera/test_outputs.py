"""edge/camera/outputs.py: --record and --jsonl never replace a user's file silently: the previous
file is kept under history/<UTC time>/ (RUN/history/ when it lies in the run) and one line says so."""

from __future__ import annotations

import json
from pathlib import Path

from edge.cli import main

OLD_VIDEO = b"the user's own recording, not a video at all"
OLD_LOG = '{"frame": 0, "from": "yesterday"}\n'


def camera(run: Path, video: Path, *options: str) -> int:
    return main(["camera", str(run), "--source", str(video), "--every-frame", "--max-frames", "3", "--threads", "1", *options])


def test_record_and_jsonl_keep_the_files_they_replace(pretrained_onnx_run, video, tmp_path, capsys):
    recording, jsonl = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    recording.write_bytes(OLD_VIDEO)
    jsonl.write_text(OLD_LOG)
    assert camera(pretrained_onnx_run, video.path, "--record", str(recording), "--jsonl", str(jsonl)) == 0

    (kept,) = (tmp_path / "history").iterdir()  # one folder for everything this run replaced
    assert (kept / "annotated.mp4").read_bytes() == OLD_VIDEO
    assert (kept / "frames.jsonl").read_text() == OLD_LOG
    assert recording.read_bytes() != OLD_VIDEO
    assert [json.loads(line)["frame"] for line in jsonl.read_text().splitlines()] == [0, 1, 2]
    out = capsys.readouterr().out
    assert f"kept the previous annotated.mp4, frames.jsonl in {kept}/ (edge camera replaces them)" in out


def test_with_jsonl_on_stdout_the_line_goes_to_stderr_even_when_quiet(pretrained_onnx_run, video, tmp_path, capsys):
    recording = tmp_path / "annotated.mp4"
    recording.write_bytes(OLD_VIDEO)
    assert camera(pretrained_onnx_run, video.path, "--record", str(recording), "--jsonl", "-", "--quiet") == 0

    (kept,) = (tmp_path / "history").iterdir()
    assert (kept / "annotated.mp4").read_bytes() == OLD_VIDEO
    captured = capsys.readouterr()
    assert [json.loads(line)["frame"] for line in captured.out.splitlines()] == [0, 1, 2]  # records only
    assert f"kept the previous annotated.mp4 in {kept}/ (edge camera replaces it)" in captured.err


def test_an_output_in_the_run_keeps_its_history_in_the_run(pretrained_onnx_run, video, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(pretrained_onnx_run, run)
    (run / "camera").mkdir()
    jsonl = run / "camera" / "frames.jsonl"
    jsonl.write_text(OLD_LOG)
    assert camera(run, video.path, "--jsonl", str(jsonl)) == 0

    (kept,) = (run / "history").iterdir()
    assert (kept / "camera" / "frames.jsonl").read_text() == OLD_LOG
    assert not (run / "camera" / "history").exists()
    assert f"kept the previous camera/frames.jsonl in {kept}/ (edge camera replaces it)" in capsys.readouterr().out


def test_a_new_file_keeps_nothing(pretrained_onnx_run, video, tmp_path, capsys):
    assert camera(pretrained_onnx_run, video.path, "--jsonl", str(tmp_path / "frames.jsonl")) == 0
    assert not (tmp_path / "history").exists()
    assert "kept the previous" not in capsys.readouterr().out


def test_a_keep_that_fails_replaces_nothing_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import os

    import pytest

    from edge import history
    from edge.camera.outputs import RunOutputs

    jsonl = tmp_path / "frames.jsonl"
    jsonl.write_text(OLD_LOG)
    outputs = RunOutputs(unix_offset=0.0)
    outputs.open(jsonl=str(jsonl), record=None, record_fps=30.0, show=False, serve=None, notice=print)
    outputs.jsonl.write({"frame": 1})  # type: ignore[union-attr]

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(history, "fsync_directory", full)
    with pytest.raises(OSError) as caught:
        outputs.finish()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(jsonl)
    assert jsonl.read_text() == OLD_LOG and sorted(p.name for p in tmp_path.iterdir()) == ["frames.jsonl"]
