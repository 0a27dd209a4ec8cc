"""edge/camera/cli.py: what `edge camera` prints and how it ends, as a user runs it.

--serve keeps the page up after the source ends (until Ctrl-C, then exit 0), the progress counts
against the frames the run will really process, the summary says when a latency is queueing of a
file read faster than real time, tables keep every cell whole at 80 columns when piped, and
--backend openvino runs the camera."""

from __future__ import annotations

import io
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from rich.console import Console

from edge.camera.cli import UNPACED_NOTE, summary_table
from edge.camera.metrics import CameraResult


def render(table, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(table)
    return out.getvalue()


def a_result(paced: bool, **threads) -> CameraResult:
    figures = {"achieved_fps": 38.8, "inference_fps": 42.2, "preprocess_p50_ms": 2.01}
    for q, value in ((50, 126.5), (90, 208.0), (99, 217.3)):
        figures[f"latency_p{q}_ms"], figures[f"inference_p{q}_ms"] = value, value / 6
    return CameraResult(
        figures=figures,
        captured=65,
        classified=60,
        dropped=0,
        retries=0,
        reconnects=0,
        end_reason="60 frames classified",
        source="/a/rather/long/path/to/some/videos/recorded/on/the/device/clip-2024-05-01.mp4",
        model="/runs/imagenet-lite0/model.onnx",
        runner={"backend": "onnxruntime", "device": "cpu", "threads": 2},
        wall_s=2.0,
        outputs={"jsonl": "/a/rather/long/path/where/the/frames/go/frames-2024-05-01-with-a-long-name.jsonl"},
        threads=threads,
        paced=paced,
    )


MEASURED = {
    "threads": 2,
    "how": "measured",
    "fps": {"2": 112.3, "1": 101.2},
    "latency_p50_ms": {"2": 10.0, "1": 11.0},
    "frames": 64,
    "cache": "/home/someone/.cache/edge-harness/camera-threads.json",
    "key": "k",
}


@pytest.mark.parametrize("paced", [False, True])
def test_summary_keeps_every_cell_whole_at_80_columns_and_names_queueing(paced):
    text = render(summary_table(a_result(paced, **MEASURED)))
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.translate(str.maketrans("│┃", "  ")).split())  # the cells' words, in order, without borders
    assert "2 (measured on the first 64 frames: 2 threads 112.3 FPS, 1 thread 101.2 FPS" in flat
    note = " ".join(UNPACED_NOTE.split())
    assert (note in flat) is (not paced)
    assert ("(queueing: see below)" in flat) is (not paced)


def test_piped_progress_counts_to_max_frames(pretrained_onnx_run, video, capsys, monkeypatch):
    """The progress of --max-frames 5 on a 9-frame file goes to 5/5, not to x/9, in log lines."""
    from edge.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["camera", str(pretrained_onnx_run), "--source", str(video.path), "--max-frames", "5", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith("camera ") and " frames, " in line]
    assert progress and progress[-1].startswith(f"camera {str(video.path)[-40:]}: 5/5 frames"), out
    assert not [line for line in progress if f"/{video.frames} frames" in line]
    assert "…" not in out


def test_realtime_progress_counts_the_position_in_the_file(pretrained_onnx_run, video, capsys):
    from edge.cli import main

    assert main(["camera", str(pretrained_onnx_run), "--source", str(video.path), "--realtime", "--threads", "1"]) == 0
    progress = [line for line in capsys.readouterr().out.splitlines() if " frames, " in line]
    assert progress[-1].split(": ", 1)[1].startswith(f"{video.frames}/{video.frames} frames")


def read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def wait_for_line(lines: queue.Queue, seen: list[str], text: str, limit_s: float) -> str:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"the camera exited before printing {text!r}:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"no {text!r} within {limit_s} s:\n{''.join(seen)}")


@pytest.mark.slow
def test_serve_keeps_the_page_after_the_source_ends_until_ctrl_c(pretrained_onnx_run):
    """`edge camera RUN --source demo --max-frames 30 --serve ...`: the page answers after the 30
    frames are done, and Ctrl-C then ends the run cleanly (exit 0: the run had finished)."""
    command = [
        sys.executable, "-m", "edge", "camera", str(pretrained_onnx_run), "--source", "demo", "--max-frames", "30",
        "--serve", "127.0.0.1:0", "--threads", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=None)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        held = wait_for_line(lines, seen, "still serving the last frame", 120)
        url = held.split(" at ", 1)[1].split(" ", 1)[0]
        assert held.startswith(
            "stopped after 30 frames (30 frames classified); still serving the last frame at http://127.0.0.1:"
        )
        assert held.rstrip().endswith("— Ctrl-C to stop")
        time.sleep(1.0)  # well after the last frame: the page is still there
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"edge camera" in response.read()
        with urllib.request.urlopen(url + "stats.json", timeout=10) as response:
            stats = json.loads(response.read())
        assert stats["classified"] == 30 and stats["ended"] == "30 frames classified"
        with urllib.request.urlopen(url + "frame.jpg", timeout=10) as response:
            assert response.headers["Content-Type"] == "image/jpeg" and response.read()[:2] == b"\xff\xd8"
        assert "ended because" in "".join(seen)  # the summary came before the wait
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    err = process.stderr.read() if process.stderr else ""
    assert process.returncode == 0, err
    assert "Traceback" not in err
    with pytest.raises(OSError):  # the server is gone with the process
        urllib.request.urlopen(url, timeout=5)


def test_backend_openvino_runs_the_camera(pretrained_onnx_run, video, capsys, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is not installed")
    from edge.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    argv = ["camera", str(pretrained_onnx_run), "--source", str(video.path), "--backend", "openvino", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(openvino:cpu)" in out and "end of file" in out
    assert f"{video.frames} / {video.frames} / 0" in out
