"""Camera sources, the capture thread and the per-frame outputs, without a model (fast)."""

from __future__ import annotations

import json
import math
import os
import threading
import time

import numpy as np
import pytest

from edge.camera.outputs import JsonlLog, VideoRecorder, display_problem, top_k
from edge.camera.server import parse_address
from edge.camera.sources import FrameGrabber, RetryPolicy, csi_pipeline, open_capture, opencv_has_gstreamer, parse_source
from edge.errors import UserError


class FakeCapture:
    """A capture that delivers ``frames`` numbered images, then fails (or blocks) on every read."""

    def __init__(self, frames: int, fps: float = 0.0, block_s: float = 0.0):
        self.frames, self.fps, self.block_s = frames, fps, block_s
        self.read_count = 0
        self.released = False

    def read(self):
        if self.read_count < self.frames:
            self.read_count += 1
            return True, np.full((4, 4, 3), self.read_count - 1, dtype=np.uint8)
        if self.block_s:
            time.sleep(self.block_s)
        return False, None

    def get(self, prop: int) -> float:
        return {5: self.fps, 7: float(self.frames) if self.frames else -1.0}.get(prop, 0.0)

    def release(self) -> None:
        self.released = True


def drain(grabber: FrameGrabber, consume_s: float = 0.0, limit_s: float = 10.0, numbered: bool = True) -> list[int]:
    """Take frames until the grabber ends; ``consume_s`` simulates a slow model. ``numbered``: the
    frames come from a FakeCapture, whose pixels carry the frame number."""
    indices, deadline = [], time.monotonic() + limit_s
    while not grabber.finished and time.monotonic() < deadline:
        frame = grabber.get(timeout=0.05)
        if frame is not None:
            indices.append(frame.index)
            assert not numbered or grabber.live or int(frame.image[0, 0, 0]) == frame.index % 256
            time.sleep(consume_s)
    return indices


# ---- source strings -----------------------------------------------------------------------------


def test_parse_source_kinds(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    assert parse_source("0").kind == "webcam" and parse_source("0").target == 0 and parse_source("0").live
    assert parse_source("/dev/video2").target == "/dev/video2"
    assert parse_source("rtsp://cam.local/stream").kind == "network"
    assert parse_source(str(video)).kind == "file" and not parse_source(str(video)).live
    assert parse_source("demo").kind == "demo"
    gst = parse_source("gst:videotestsrc ! videoconvert ! appsink")
    assert gst.kind == "gstreamer" and gst.target == "videotestsrc ! videoconvert ! appsink"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--source is empty"),
        ("missing.mp4", "does not exist"),
        ("ftp://host/x", "unsupported source scheme"),
        ("csi://x", "bad CSI source"),
        ("csi://0?zoom=2", "does not know the option"),
        ("gst:videotestsrc ! fakesink", "must end in an appsink"),
    ],
)
def test_parse_source_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_source(text)


def test_csi_pipeline_string():
    assert csi_pipeline(1, width=1920, height=1080, fps=60, flip=2) == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM), width=(int)1920, height=(int)1080, framerate=(fraction)60/1, format=(string)NV12 ! "
        "nvvidconv flip-method=2 ! video/x-raw, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )
    source = parse_source("csi://0?width=640&height=480")
    assert source.kind == "gstreamer" and source.live
    assert source.target == csi_pipeline(0, width=640, height=480)
    with pytest.raises(UserError, match="flip must be 0..7"):
        csi_pipeline(0, flip=9)


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer: the error path cannot be reached")
@pytest.mark.parametrize("text", ["csi://0", "gst:videotestsrc ! videoconvert ! appsink"])
def test_gstreamer_sources_without_gstreamer_say_so(text):
    with pytest.raises(UserError, match="built without GStreamer"):
        open_capture(parse_source(text))


def test_missing_camera_is_one_line_error():
    with pytest.raises(UserError, match=r"camera /dev/video9 not found \(/dev/video9 does not exist") as info:
        open_capture(parse_source("/dev/video9"))
    assert "\n" not in str(info.value)


def test_serve_address():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(UserError, match="expected HOST:PORT"):
        parse_address("localhost:http")
    with pytest.raises(UserError, match="0..65535"):
        parse_address("70000")


# ---- the capture thread -------------------------------------------------------------------------


def test_every_frame_delivers_all_frames_in_order():
    grabber = FrameGrabber(lambda: FakeCapture(0), live=False, every_frame=True).start(FakeCapture(20))
    assert drain(grabber, consume_s=0.005) == list(range(20))
    assert grabber.stats.dropped == 0 and grabber.stats.end_reason == "end of file"


def test_newest_frame_mode_drops_and_counts_stale_frames():
    grabber = FrameGrabber(lambda: FakeCapture(0), live=False, realtime_fps=200.0).start(FakeCapture(60, fps=200.0))
    got = drain(grabber, consume_s=0.03)
    assert got == sorted(got) and len(got) < 60
    # every frame was either classified, dropped or still in the slot when the file ended
    assert len(got) + grabber.stats.dropped == 60


def test_realtime_below_consumer_speed_drops_nothing():
    grabber = FrameGrabber(lambda: FakeCapture(0), live=False, realtime_fps=50.0).start(FakeCapture(15, fps=50.0))
    assert drain(grabber) == list(range(15))
    assert grabber.stats.dropped == 0


def test_stalled_live_source_retries_with_backoff_then_ends():
    waits: list[float] = []
    opened: list[FakeCapture] = []

    def reopen():
        opened.append(FakeCapture(0))
        return opened[-1]

    retry = RetryPolicy(retries=3, delay_s=0.5, max_delay_s=1.5)
    grabber = FrameGrabber(reopen, live=True, retry=retry, sleep=waits.append).start(FakeCapture(5))
    assert len(drain(grabber)) >= 1
    assert waits == [0.5, 1.0, 1.5]  # doubling, capped at max_delay_s
    assert len(opened) == 3 and all(c.released for c in opened[:-1])
    assert grabber.stats.retries == 3 and grabber.stats.reconnects == 0
    assert grabber.stats.end_reason == "source stalled: no frame after 3 retries with backoff"


def test_stalled_source_that_comes_back_is_reconnected():
    captures = iter([FakeCapture(0), FakeCapture(4)])
    grabber = FrameGrabber(lambda: next(captures), live=True, retry=RetryPolicy(retries=3, delay_s=0.0), every_frame=True)
    grabber.start(FakeCapture(3))
    frames = drain(grabber)
    assert frames == list(range(7))  # 3 before the stall, 4 after reconnecting
    assert grabber.stats.reconnects == 1 and grabber.stats.retries == 3  # 2 to get back, then 1 more at the final stall


def test_blocked_read_is_reported_as_a_stall_without_hanging():
    grabber = FrameGrabber(lambda: FakeCapture(0), live=True, retry=RetryPolicy(stall_timeout_s=0.2))
    grabber.start(FakeCapture(2, block_s=30.0))
    deadline = time.monotonic() + 5
    while grabber.stalled_for() < 0.2 and time.monotonic() < deadline:
        grabber.get(timeout=0.05)
    assert grabber.stalled_for() >= 0.2 and not grabber.finished
    started = time.monotonic()
    grabber.stop(timeout=0.2)
    assert time.monotonic() - started < 2.0  # a read stuck in a driver does not hold up the shutdown


def test_truncated_avi_ends_with_a_note(tmp_path):
    from edge.camera.demo import write_demo_video

    video = write_demo_video(tmp_path / "clip.avi", size=(64, 48), fps=8, seconds_per_photo=1.0, photos=_tiny_photos())
    data = video.path.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: len(data) * 6 // 10])
    grabber = FrameGrabber(lambda: None, live=False, every_frame=True).start(open_capture(parse_source(str(truncated))))
    frames = drain(grabber, numbered=False)
    assert 0 < len(frames) < 24
    assert grabber.stats.end_reason == f"file ended after {len(frames)} of 24 frames (truncated?)"


def test_truncated_mp4_cannot_be_opened(tmp_path):
    from edge.camera.demo import write_demo_video

    video = write_demo_video(tmp_path / "clip.mp4", size=(64, 48), fps=8, seconds_per_photo=1.0, photos=_tiny_photos())
    data = video.path.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated/corrupt file"):
        open_capture(parse_source(str(truncated)))


def _tiny_photos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for name in ("a", "b", "c")}


def test_retry_policy_validation():
    with pytest.raises(UserError, match="--retries must be >= 0"):
        RetryPolicy(retries=-1)
    with pytest.raises(UserError, match="--stall-timeout must be positive"):
        RetryPolicy(stall_timeout_s=0)


# ---- outputs ----------------------------------------------------------------------------------


def test_top_k_is_softmax_ordered():
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    best = top_k(logits, ("a", "b", "c", "d"), 3)
    assert [p.class_id for p in best] == [1, 2, 0]
    assert [p.label for p in best] == ["b", "c", "a"]
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose([p.prob for p in best], expected[[1, 2, 0]])
    assert top_k(logits, (), 1)[0].label == "class 1"


def test_jsonl_appears_only_when_complete(tmp_path):
    target = tmp_path / "log.jsonl"
    log = JsonlLog(str(target))
    log.write({"frame": 0})
    log.write({"frame": 1})
    assert not target.exists()  # still under its temporary name
    log.close()
    assert [json.loads(line)["frame"] for line in target.read_text().splitlines()] == [0, 1]
    assert not list(tmp_path.glob(".*partial*"))


def test_recorder_writes_a_playable_video(tmp_path):
    import cv2

    recorder = VideoRecorder(tmp_path / "out.avi", fps=10)
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    recorder.write(frame)
    recorder.write(frame, repeat=3)
    assert not (tmp_path / "out.avi").exists()
    recorder.close()
    capture = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    with pytest.raises(UserError, match="use .mp4 or .avi"):
        VideoRecorder(tmp_path / "out.gif", fps=10)


def test_no_display_is_detected(monkeypatch):
    import cv2

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_problem(cv2) == "no display (DISPLAY/WAYLAND_DISPLAY unset)"
    # A DISPLAY with no X server behind it: Qt would abort the process, so it must be caught first.
    monkeypatch.setenv("DISPLAY", ":97")
    if not os.path.exists("/tmp/.X11-unix/X97"):
        assert display_problem(cv2) == "display :97 is not reachable"


def test_grabber_thread_is_a_daemon():
    grabber = FrameGrabber(lambda: FakeCapture(0), live=False, every_frame=True).start(FakeCapture(1))
    assert grabber._thread is not None and grabber._thread.daemon
    drain(grabber)
    grabber.stop()
    assert not any(t.name == "edge-camera-capture" and t.is_alive() for t in threading.enumerate() if t is grabber._thread)


def test_waiting_between_retries_is_not_a_stall():
    retry = RetryPolicy(retries=1, delay_s=0.6, stall_timeout_s=0.2)
    grabber = FrameGrabber(lambda: FakeCapture(0), live=True, retry=retry).start(FakeCapture(1))
    stalled = []
    deadline = time.monotonic() + 10
    while not grabber.finished and time.monotonic() < deadline:
        grabber.get(timeout=0.05)
        stalled.append(grabber.stalled_for())
    assert max(stalled) < 0.2  # the 0.6 s backoff never looked like a blocked read
    assert grabber.stats.end_reason == "source stalled: no frame after 1 retries with backoff"


# ---- when a frame is stamped ------------------------------------------------------------------------


class TwoStepCapture:
    """A capture read like cv2.VideoCapture in two steps: ``grab()`` takes the next frame (waiting
    ``wait_s`` for it, as a camera's next frame is waited for) and ``retrieve()`` decodes it (``decode_s``).
    POS_MSEC is the grabbed frame's timestamp until it is retrieved and garbage after, so a timestamp
    read after decode would show. ``events`` holds (grab called, grab returned, retrieve called) per frame."""

    def __init__(self, frames: int, fps: float = 25.0, wait_s: float = 0.0, decode_s: float = 0.02, first_ms: float = 0.0):
        self.frames, self.fps, self.wait_s, self.decode_s, self.first_ms = frames, fps, wait_s, decode_s, first_ms
        self.grabbed = 0
        self.pos_ms = 0.0
        self.events: list[list[float]] = []

    def grab(self) -> bool:
        called = time.monotonic()
        if self.grabbed >= self.frames:
            return False
        time.sleep(self.wait_s)
        self.pos_ms = self.first_ms + self.grabbed * 1000.0 / self.fps
        self.grabbed += 1
        self.events.append([called, time.monotonic(), math.nan])
        return True

    def retrieve(self):
        self.events[-1][2] = time.monotonic()
        self.pos_ms = -12345.0
        time.sleep(self.decode_s)
        return True, np.full((4, 4, 3), self.grabbed - 1, dtype=np.uint8)

    def read(self):
        raise AssertionError("read() was used although grab() and retrieve() exist")

    def get(self, prop: int) -> float:
        return {0: self.pos_ms, 5: self.fps, 7: float(self.frames)}.get(prop, 0.0)

    def release(self) -> None:
        return None


def take_frames(grabber: FrameGrabber, limit_s: float = 10.0) -> list:
    frames, deadline = [], time.monotonic() + limit_s
    while not grabber.finished and time.monotonic() < deadline:
        frame = grabber.get(timeout=0.05)
        if frame is not None:
            frames.append(frame)
    return frames


def test_live_frame_is_stamped_when_grabbed_before_decode():
    capture = TwoStepCapture(4, wait_s=0.03, decode_s=0.02, first_ms=5000.0)
    grabber = FrameGrabber(lambda: TwoStepCapture(0), live=True, every_frame=True, retry=RetryPolicy(retries=0))
    frames = take_frames(grabber.start(capture))
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for frame, (called, returned, retrieved) in zip(frames, capture.events, strict=True):
        # after the wait for the frame (not latency), before its decode (latency)
        assert returned <= frame.grabbed_at <= retrieved
        assert frame.captured_at - frame.grabbed_at >= 0.02
        assert frame.grabbed_at - called >= 0.03
        assert frame.source_ts_ms == pytest.approx(5000.0 + frame.index * 40.0)  # read at grab, not after decode


def test_file_frame_is_stamped_before_grab_with_its_container_time():
    capture = TwoStepCapture(5, fps=25.0, decode_s=0.01)
    grabber = FrameGrabber(lambda: TwoStepCapture(0), live=False, every_frame=True)
    frames = take_frames(grabber.start(capture))
    assert [f.index for f in frames] == list(range(5))
    for frame, (called, _, _) in zip(frames, capture.events, strict=True):
        # a file's frame waits for nothing: OpenCV's FFmpeg backend decodes inside grab(), so the stamp precedes it
        assert frame.grabbed_at <= called
        assert frame.captured_at - frame.grabbed_at >= 0.01
    assert [f.source_ts_ms for f in frames] == pytest.approx([0.0, 40.0, 80.0, 120.0, 160.0])


def test_realtime_file_frames_are_grabbed_at_their_release_time():
    capture = TwoStepCapture(6, fps=50.0, decode_s=0.005)
    grabber = FrameGrabber(lambda: TwoStepCapture(0), live=False, realtime_fps=50.0)
    frames = take_frames(grabber.start(capture))
    assert [f.index for f in frames] == list(range(6))
    # frame i is released (and only then grabbed and decoded) at start + i / fps, as a camera delivers it
    start = frames[0].grabbed_at
    for frame, (called, _, _) in zip(frames, capture.events, strict=True):
        assert frame.grabbed_at >= start + frame.index / 50.0 - 1e-3
        assert frame.grabbed_at <= called and frame.captured_at - frame.grabbed_at >= 0.005


def test_video_file_frames_carry_the_container_timestamp(tmp_path):
    from edge.camera.demo import write_demo_video

    video = write_demo_video(tmp_path / "clip.mp4", size=(64, 48), fps=8, seconds_per_photo=0.5, photos=_tiny_photos())
    grabber = FrameGrabber(lambda: None, live=False, every_frame=True).start(open_capture(parse_source(str(video.path))))
    frames = take_frames(grabber)
    assert len(frames) == video.frames == 12
    assert [f.source_ts_ms for f in frames] == pytest.approx([1000.0 * i / video.fps for i in range(video.frames)])
    assert all(f.grabbed_at <= f.captured_at for f in frames)


def test_video_files_are_decoded_on_one_ffmpeg_thread(tmp_path):
    import cv2

    from edge.camera.demo import write_demo_video

    video = write_demo_video(tmp_path / "clip.mp4", size=(64, 48), fps=8, seconds_per_photo=0.5, photos=_tiny_photos())
    capture = open_capture(parse_source(str(video.path)))
    try:
        assert capture.getBackendName() == "FFMPEG"
        assert capture.get(cv2.CAP_PROP_N_THREADS) == 1
        assert capture.read()[1].shape == (48, 64, 3)
    finally:
        capture.release()


def test_a_file_ffmpeg_cannot_open_falls_back_to_opencvs_choice(monkeypatch):
    import cv2

    from edge.camera import sources

    calls = []

    class Capture:
        def __init__(self, *args):
            calls.append(args)

        def isOpened(self):
            return len(calls) > 1  # FFmpeg (first call) refuses; the plain open succeeds

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    capture = sources.open_file(cv2, "frames/%04d.png")
    assert capture.isOpened()
    assert calls == [("frames/%04d.png", cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1]), ("frames/%04d.png",)]


def test_read_only_capture_is_stamped_around_read():
    grabber = FrameGrabber(lambda: FakeCapture(0), live=True, every_frame=True, retry=RetryPolicy(retries=0))
    frames = take_frames(grabber.start(FakeCapture(3)))
    assert len(frames) == 3
    assert all(f.grabbed_at <= f.captured_at for f in frames)
    assert all(f.source_ts_ms is None for f in frames)  # a live source reporting 0 reports nothing


# ---- just-in-time preprocessing ---------------------------------------------------------------------


def _tensor_of(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def test_a_source_faster_than_the_model_preprocesses_mostly_the_frames_the_model_takes():
    # 240 frames at 400 FPS (2.5 ms apart) for a consumer busy 15 ms per frame: about one frame in
    # six is taken; the reader preprocesses the ones due within two intervals of the consumer's return.
    grabber = FrameGrabber(lambda: None, live=False, realtime_fps=400.0, preprocess=_tensor_of)
    grabber.start(FakeCapture(240, fps=400.0))
    taken = []
    deadline = time.monotonic() + 10
    while not grabber.finished and time.monotonic() < deadline:
        frame = grabber.get(timeout=0.05)
        if frame is not None:
            assert frame.tensor is not None and frame.tensor.dtype == np.float32  # get() never hands out a raw frame
            np.testing.assert_array_equal(frame.tensor, _tensor_of(frame.image))
            taken.append(frame.index)
            time.sleep(0.015)
    stats = grabber.stats
    assert stats.captured == 240 and 0 < len(taken) < 120
    assert stats.dropped == stats.captured - len(taken)
    assert stats.preprocessed + stats.preprocessed_on_take >= len(taken)
    assert stats.preprocessed < stats.captured * 0.6  # eager preprocessing would have done all 240
    assert stats.preprocessed_on_take <= len(taken)


def test_every_frame_mode_preprocesses_every_frame_on_the_reader():
    grabber = FrameGrabber(lambda: None, live=False, every_frame=True, preprocess=_tensor_of).start(FakeCapture(12))
    frames = []
    while not grabber.finished:
        frame = grabber.get(timeout=0.05)
        if frame is not None:
            frames.append(frame)
    assert [f.index for f in frames] == list(range(12)) and all(f.tensor is not None for f in frames)
    assert grabber.stats.preprocessed == 12 and grabber.stats.preprocessed_on_take == 0


@pytest.mark.parametrize(
    ("waiting", "free_in_s", "expected"),
    [
        (True, 0.050, True),  # the consumer is waiting for a frame: this is the one
        (False, 0.003, True),  # free before the next frame (4 ms away) arrives
        (False, 0.007, True),  # free within two intervals: worth the work
        (False, 0.030, False),  # several frames will replace this one first
    ],
)
def test_the_reader_prepares_a_frame_only_when_the_consumer_will_take_it(waiting, free_in_s, expected):
    grabber = FrameGrabber(lambda: None, live=True, preprocess=_tensor_of)
    now = 100.0
    grabber._frame_interval = 0.004  # a 250 FPS source
    grabber._consumer_busy = 0.010
    grabber._taken_at = {1: now - 0.010 + free_in_s}  # so the consumer is back at now + free_in_s
    grabber._consumers_waiting = int(waiting)
    assert grabber._worth_preparing(now) is expected


def test_with_two_consumers_the_first_one_free_decides():
    grabber = FrameGrabber(lambda: None, live=True, preprocess=_tensor_of)
    now = 100.0
    grabber._frame_interval = 0.004
    grabber._consumer_busy = 0.020
    grabber._taken_at = {1: now - 0.019, 2: now - 0.001}  # one is free in 1 ms, the other in 19 ms
    assert grabber._worth_preparing(now) is True
    grabber._taken_at = {1: now - 0.002, 2: now - 0.001}  # both busy for 18+ ms
    assert grabber._worth_preparing(now) is False


def test_a_consumer_that_leaves_no_longer_counts():
    grabber = FrameGrabber(lambda: None, live=True, preprocess=_tensor_of)
    grabber._frame_interval, grabber._consumer_busy = 0.004, 0.020
    done = threading.Event()

    def other_consumer():
        grabber._taken_at[threading.get_ident()] = time.monotonic() - 0.019  # free in 1 ms
        grabber.leave()
        done.set()

    threading.Thread(target=other_consumer).start()
    assert done.wait(5)
    grabber._taken_at[threading.get_ident()] = time.monotonic()  # this one: busy for 20 ms
    assert grabber._worth_preparing(time.monotonic()) is False


def test_with_nothing_measured_yet_every_frame_is_prepared():
    grabber = FrameGrabber(lambda: None, live=True, preprocess=_tensor_of)
    assert grabber._worth_preparing(time.monotonic()) is True
