"""edge/camera/threads.py and edge/camera/cache.py: the camera's thread setting, chosen by measuring the
candidates side by side on the first frames (or read from the cache for this machine and model),
and the cache itself (XDG_CACHE_HOME, atomic writes, damaged files ignored).

The probe is driven here with made-up result times, so what it decides is exact; the runs at the
end go through ``run_camera`` with real runners and check what is chosen, reported and cached."""

from __future__ import annotations

import json

import pytest

from edge.camera.cache import load_thread_choice, store_thread_choice, thread_choices_path, user_cache_dir
from edge.camera.options import CameraOptions
from edge.camera.session import run_camera
from edge.camera.threads import (
    ThreadChoice,
    ThreadProbe,
    parse_setting,
    setting_label,
    setting_of,
    streams_of,
    thread_candidates,
    threads_of,
)
from edge.errors import UserError


def drive(probe: ThreadProbe, interval_ms: dict[int, float], latency_ms: dict[int, float], limit: int = 1000) -> list[int]:
    """Feed results whose spacing and latency depend on the thread count in use; returns who ran each."""
    now, used = 0.0, []
    for _ in range(limit):
        threads = probe.threads
        used.append(threads)
        now += interval_ms[threads] / 1000
        if probe.record(now, latency_ms[threads] / 1000):
            break
    return used


@pytest.mark.parametrize(("cores", "expected"), [(1, [1]), (2, [2, 1]), (16, [16, 15])])
def test_candidates_are_all_cores_and_all_but_one(cores, expected):
    assert thread_candidates(cores) == expected


@pytest.mark.parametrize(("cores", "expected"), [(1, [1]), (2, [2, 1, "2x1"]), (3, [3, 2, "2x1"]), (16, [16, 15, "2x8"])])
def test_with_streams_two_streams_of_half_the_cores_are_a_candidate(cores, expected):
    assert thread_candidates(cores, streams=True) == expected


def test_settings_read_and_print():
    assert setting_of(1, 4) == 4 and setting_of(2, 1) == "2x1"
    assert (streams_of(4), threads_of(4), streams_of("2x3"), threads_of("2x3")) == (1, 4, 2, 3)
    assert [parse_setting(v) for v in (2, "2", "2x1", "1x3", "0", "x", "2x", -1, "2x1x1", True)] == [
        2,
        2,
        "2x1",
        3,
        None,
        None,
        None,
        None,
        None,
        None,
    ]
    assert [setting_label(v) for v in (1, 2, "2x1", None)] == [
        "1 thread",
        "2 threads",
        "2 streams x 1 thread",
        "backend default threads",
    ]


def test_probe_measures_two_streams_and_ignores_a_result_from_the_previous_slice():
    probe = ThreadProbe({2: "two", "2x1": "streams"}, slice_frames=3, slice_s=0.0)
    now = 0.0
    for _ in range(3):  # the first slice: 2 threads, a result every 10 ms
        now += 0.010
        probe.record(now, 0.010, 2)
    assert probe.threads == "2x1"
    now += 0.001
    assert probe.record(now, 0.050, 2) is False  # the other stream's frame from the 2-thread slice
    while probe.choice is None:
        setting = probe.threads
        now += 0.005 if setting == "2x1" else 0.010
        probe.record(now, 0.010, setting)
    assert probe.choice.threads == "2x1"
    assert probe.choice.fps == {2: pytest.approx(100.0), "2x1": pytest.approx(200.0)}
    # the stray result counted for neither: its latency is in no candidate's figures
    assert probe.choice.latency_ms == {2: pytest.approx(10.0), "2x1": pytest.approx(10.0)}


def test_probe_alternates_a_b_b_a_twice_and_keeps_the_higher_fps():
    probe = ThreadProbe({2: "two", 1: "one"}, slice_frames=5, slice_s=0.0)
    used = drive(probe, interval_ms={2: 8.0, 1: 10.0}, latency_ms={2: 9.0, 1: 11.0})
    assert used == ([2] * 5 + [1] * 5 + [1] * 5 + [2] * 5) * 2  # A B B A A B B A
    assert probe.choice is not None and probe.choice.threads == 2 and probe.choice.how == "measured"
    assert probe.runner() == "two"
    # the first result of the run has no interval before it; every other one counts for its runner
    assert probe.choice.fps[2] == pytest.approx(125.0) and probe.choice.fps[1] == pytest.approx(100.0)
    assert probe.choice.latency_ms == {2: pytest.approx(9.0), 1: pytest.approx(11.0)}
    assert probe.choice.frames == 40


def test_the_setting_is_readable_at_every_step_of_the_last_slice():
    """The second stream's thread reads ``threads`` without the session's lock, at any moment."""
    probe = ThreadProbe({2: "two", "2x1": "streams"}, slice_frames=1, slice_s=0.0)
    seen = []
    now = 0.0
    while probe.choice is None:
        now += 0.01
        probe.record(now, 0.01, probe.threads)
        seen.append(probe.threads)
    assert probe.threads == probe.choice.threads and seen[-1] == probe.choice.threads
    probe.choice, probe._slice = None, len(probe.schedule)  # the state a reader could meet mid-update
    assert probe.threads == probe.schedule[-1]


def test_one_slice_spoilt_by_other_work_does_not_decide():
    """2 threads are faster, but other work slowed the first of their slices to a crawl: the median
    over the slices still sees them as faster (a total over all intervals would not)."""
    probe = ThreadProbe({2: "two", 1: "one"}, slice_frames=5, slice_s=0.0)
    now, results = 0.0, 0
    while probe.choice is None:
        threads = probe.threads
        results += 1
        now += (60.0 if threads == 2 and results <= 5 else 8.0 if threads == 2 else 10.0) / 1000
        probe.record(now, 0.01)
    assert probe.choice.threads == 2 and probe.choice.fps[2] == pytest.approx(125.0)


def test_probe_keeps_fewer_threads_when_they_are_faster():
    probe = ThreadProbe({2: "two", 1: "one"}, slice_frames=4, slice_s=0.0)
    drive(probe, interval_ms={2: 11.0, 1: 9.9}, latency_ms={2: 12.0, 1: 10.0})
    assert probe.choice is not None and probe.choice.threads == 1


def test_a_source_slower_than_the_model_is_decided_by_latency():
    """Both settings deliver the source's 30 FPS: the one with the lower latency wins."""
    probe = ThreadProbe({2: "two", 1: "one"}, slice_frames=4, slice_s=0.0)
    drive(probe, interval_ms={2: 33.4, 1: 33.3}, latency_ms={2: 9.0, 1: 14.0})
    assert probe.choice is not None and probe.choice.threads == 2


def test_each_slice_lasts_its_minimum_time():
    probe = ThreadProbe({2: "two", 1: "one"}, slice_frames=2, slice_s=0.095)
    used = drive(probe, interval_ms={2: 10.0, 1: 10.0}, latency_ms={2: 5.0, 1: 5.0})
    # the first slice starts at its first result (11 results to span 0.095 s); the next at the slice's last result
    assert used[:11] == [2] * 11 and used[11:21] == [1] * 10


def test_a_run_that_ends_during_the_measurement_says_so():
    probe = ThreadProbe({2: "two", 1: "one"}, slice_frames=5, slice_s=0.0)
    drive(probe, interval_ms={2: 8.0, 1: 10.0}, latency_ms={2: 9.0, 1: 11.0}, limit=7)
    assert probe.choice is None
    unfinished = probe.unfinished()
    assert unfinished.how.startswith("not measured: the run ended during the measurement (7 frames")
    assert unfinished.threads == 1  # the one running when it ended


def test_choice_round_trips_and_reads_as_one_line():
    choice = ThreadChoice(2, "measured", {1: 101.24, 2: 112.31}, {1: 12.0, 2: 10.5}, 64, "/c/camera-threads.json", "k")
    assert ThreadChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice
    assert choice.describe() == (
        "2 (measured on the first 64 frames: 2 threads 112.3 FPS, 1 thread 101.2 FPS; cached in /c/camera-threads.json)"
    )
    assert ThreadChoice(3, "--threads").describe() == "3 (--threads)"
    assert ThreadChoice(None, "backend default").describe() == "backend default"
    missing = ThreadChoice(2, "measured", {2: 90.0, 1: None}, {}, 3)
    assert "1 thread n/a FPS" in missing.describe()
    streams = ThreadChoice("2x1", "measured", {1: 101.2, "2x1": 180.5, 2: 112.3}, {1: 12.0, "2x1": 11.0, 2: 10.5}, 96)
    assert ThreadChoice.from_dict(json.loads(json.dumps(streams.to_dict()))) == streams
    assert streams.describe() == (
        "2 streams x 1 thread (measured on the first 96 frames: 2 threads 112.3 FPS, 1 thread 101.2 FPS, "
        "2 streams x 1 thread 180.5 FPS)"
    )


def test_cache_dir_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "edge-harness"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/not/allowed")  # the XDG spec ignores relative paths
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "edge-harness"


def test_cache_keeps_other_keys_and_ignores_damaged_files(private_cache):
    store_thread_choice("a", {"threads": 2, "fps": {"2": 110.0}})
    store_thread_choice("b", {"threads": 1})
    store_thread_choice("a", {"threads": 1})
    entries = json.loads(thread_choices_path().read_text())
    assert set(entries) == {"a", "b"} and entries["a"]["threads"] == 1 and "measured_at" in entries["a"]
    assert load_thread_choice("a")["threads"] == 1 and load_thread_choice("c") is None
    assert not [p for p in private_cache.iterdir() if p.name.startswith(".")]  # written atomically
    thread_choices_path().write_text("{not json")
    assert load_thread_choice("a") is None
    thread_choices_path().write_text(json.dumps({"a": {"threads": 0}}))
    assert load_thread_choice("a") is None  # a nonsense entry is no choice
    thread_choices_path().write_text(json.dumps({"a": {"threads": "2x1"}, "b": {"threads": "2xx"}}))
    assert load_thread_choice("a")["threads"] == "2x1" and load_thread_choice("b") is None


# ---- through run_camera -------------------------------------------------------------------------


@pytest.fixture
def quick_probe(monkeypatch):
    """Two candidates on any machine, and slices of 1 result, so a 9-frame video completes the measurement."""
    monkeypatch.setattr("edge.runners.onnxruntime_runner.physical_cores", lambda: 2)
    monkeypatch.setattr("edge.camera.threads.SLICE_FRAMES", 1)
    monkeypatch.setattr("edge.camera.threads.SLICE_S", 0.0)


def test_the_camera_measures_then_reuses_the_cached_choice(pretrained_onnx_run, video, quick_probe, private_cache):
    options = CameraOptions(source=str(video.path), every_frame=True, quiet=True)
    first = run_camera(pretrained_onnx_run, options)
    assert first.threads["how"] == "measured" and first.threads["threads"] in (1, 2)
    assert set(first.threads["fps"]) == {"1", "2"} and all(v > 0 for v in first.threads["fps"].values())
    assert first.runner["threads"] == first.threads["threads"]
    assert first.classified == video.frames  # the measurement classifies frames like any others
    entries = json.loads((private_cache / "camera-threads.json").read_text())
    ((key, entry),) = entries.items()
    assert entry["threads"] == first.threads["threads"] and "frame=320x240" in key and "backend=onnxruntime" in key

    second = run_camera(pretrained_onnx_run, options)
    assert second.threads["how"] == "cached" and second.threads["threads"] == first.threads["threads"]
    assert second.runner["threads"] == first.threads["threads"] and second.threads["fps"] == first.threads["fps"]

    # another frame size is another key: measured again
    third = run_camera(pretrained_onnx_run, CameraOptions(source="demo", max_frames=12, quiet=True, every_frame=True))
    assert third.threads["how"] == "measured"
    assert len(json.loads((private_cache / "camera-threads.json").read_text())) == 2


def test_explicit_threads_skip_the_measurement(pretrained_onnx_run, video, quick_probe, private_cache):
    result = run_camera(pretrained_onnx_run, CameraOptions(source=str(video.path), threads=1, quiet=True))
    assert result.threads["how"] == "--threads" and result.runner["threads"] == 1
    assert not (private_cache / "camera-threads.json").exists()


def test_without_the_cache_the_camera_measures_every_time(pretrained_onnx_run, video, quick_probe, private_cache):
    options = CameraOptions(source=str(video.path), quiet=True, thread_cache=False)
    assert run_camera(pretrained_onnx_run, options).threads["how"] == "measured"
    assert run_camera(pretrained_onnx_run, options).threads["how"] == "measured"
    assert not (private_cache / "camera-threads.json").exists()


def test_an_unwritable_cache_costs_a_notice_not_the_run(pretrained_onnx_run, video, quick_probe, tmp_path, monkeypatch):
    import io

    from rich.console import Console

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    out = io.StringIO()
    result = run_camera(pretrained_onnx_run, CameraOptions(source=str(video.path)), console=Console(file=out, width=300))
    assert result.threads["how"] == "measured" and result.classified == video.frames
    assert "threads: the choice is not cached" in out.getvalue()
    assert "set XDG_CACHE_HOME to a writable directory" in out.getvalue()


def test_the_openvino_backend_runs_the_camera_and_is_measured(pretrained_onnx_run, video, quick_probe, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed")
    from edge.photos import PHOTO_CLASSES

    jsonl = tmp_path / "frames.jsonl"
    options = CameraOptions(source=str(video.path), backend="openvino", every_frame=True, jsonl=str(jsonl), quiet=True)
    result = run_camera(pretrained_onnx_run, options)
    assert result.runner["backend"] == "openvino" and result.end_reason == "end of file"
    assert result.classified == video.frames and result.threads["how"] == "measured"
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for name in ("cat", "coffee"):
        start, end = video.segments[name]
        top1 = [records[i]["topk"][0]["class_id"] for i in range(start, end)]
        assert all(c in PHOTO_CLASSES[name] for c in top1), f"{name} segment labelled {top1} by openvino"


# ---- two streams ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_video(photos, tmp_path_factory):
    """A paced source at 120 FPS (180 frames): with --realtime the model gets the newest frame only."""
    from edge.camera.demo import write_demo_video

    return write_demo_video(
        tmp_path_factory.mktemp("fast") / "fast.mp4", size=(320, 240), fps=120, seconds_per_photo=0.5, photos=photos
    )


def test_two_streams_classify_side_by_side(pretrained_onnx_run, fast_video, tmp_path):
    jsonl, recording = tmp_path / "frames.jsonl", tmp_path / "out.mp4"
    options = CameraOptions(
        source=str(fast_video.path), threads=1, streams=2, realtime=True, quiet=True, jsonl=str(jsonl), record=str(recording)
    )
    result = run_camera(pretrained_onnx_run, options)
    assert result.threads["threads"] == "2x1" and result.threads["how"] == "--threads --streams"
    assert result.runner["streams"] == 2 and result.runner["threads"] == 1
    assert result.end_reason == "end of file" and result.classified >= 10
    assert result.captured == fast_video.frames and result.classified + result.dropped == result.captured
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == result.classified  # every result is logged, in or out of order
    indices = [r["frame"] for r in records]
    late = sum(1 for i, index in enumerate(indices) if index < max(indices[:i], default=-1))
    assert late == result.out_of_order
    import cv2

    assert int(cv2.VideoCapture(str(recording)).get(cv2.CAP_PROP_FRAME_COUNT)) >= max(indices)


def test_the_measurement_includes_two_streams_for_a_paced_source(pretrained_onnx_run, fast_video, quick_probe):
    options = CameraOptions(source=str(fast_video.path), realtime=True, quiet=True, thread_cache=False)
    result = run_camera(pretrained_onnx_run, options)
    assert result.threads["how"] == "measured"
    assert set(result.threads["fps"]) == {"2", "1", "2x1"}
    chosen = result.threads["threads"]
    assert result.runner["streams"] == (2 if chosen == "2x1" else 1)
    # every frame in order (a file read without --realtime) is one stream's work: no stream candidate
    ordered = run_camera(pretrained_onnx_run, CameraOptions(source=str(fast_video.path), quiet=True, thread_cache=False))
    assert set(ordered.threads["fps"]) == {"2", "1"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"streams": 0, "realtime": True}, "--streams must be at least 1"),
        ({"streams": 2}, "needs a live source or --realtime"),
        ({"streams": 2, "realtime": True, "show": True}, "--streams with --show"),
        ({"streams": 2, "realtime": True, "device": "cuda"}, "--streams is for --device cpu"),
    ],
)
def test_streams_that_cannot_work_are_refused_before_any_work(pretrained_onnx_run, fast_video, options, message):
    with pytest.raises(UserError, match=message):
        run_camera(pretrained_onnx_run, CameraOptions(source=str(fast_video.path), quiet=True, **options))


def test_a_torch_checkpoint_cannot_run_two_streams(pretrained_run, fast_video):
    options = CameraOptions(source=str(fast_video.path), streams=2, realtime=True, quiet=True, backend="torch")
    with pytest.raises(UserError, match="--streams needs a backend whose threads belong to one runner"):
        run_camera(pretrained_run, options)


def test_stopping_a_two_stream_run_ends_both_streams(pretrained_onnx_run, fast_video):
    import threading

    stop = threading.Event()
    timer = threading.Timer(0.8, stop.set)
    timer.start()
    try:
        options = CameraOptions(source=str(fast_video.path), threads=1, streams=2, realtime=True, loop=True, quiet=True)
        result = run_camera(pretrained_onnx_run, options, stop=stop)
    finally:
        timer.cancel()
    assert result.end_reason == "stopped" and result.classified > 0
    assert not [t for t in threading.enumerate() if t.name == "edge-camera-stream-2"]
