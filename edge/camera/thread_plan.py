"""Which runners a camera run starts with: one per stream of the thread setting it will use, or of
every candidate while :class:`edge.camera.threads.ThreadProbe` measures them on the first frames.

A fixed setting (``--threads``/``--streams``, a device other than the CPU, one core, a backend that
sets threads for the whole process) or one cached for this machine and model needs no measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.camera.cache import load_thread_choice, thread_choices_path
from edge.camera.options import CameraOptions
from edge.camera.threads import (
    MEASURED_BACKENDS,
    Setting,
    ThreadChoice,
    setting_of,
    streams_of,
    thread_cache_key,
    thread_candidates,
    threads_of,
)
from edge.errors import UserError


def inference_threads(options: CameraOptions, one_slot: bool = True) -> list[Setting] | None:
    """The settings the model may get: ``[--threads/--streams]``; on CPU the candidates the camera
    measures (all physical cores, all but one, and with ``one_slot`` (the newest frame only: a live
    source or --realtime; not --show) two streams of half the cores each:
    :func:`edge.camera.threads.thread_candidates`); None elsewhere (on CUDA the host threads matter
    little and the backend keeps its own default)."""
    from edge.runners.onnxruntime_runner import physical_cores

    if options.threads is not None or options.streams is not None:
        streams = options.streams or 1
        return [setting_of(streams, options.threads or max(1, physical_cores() // streams))]
    if options.device != "cpu":
        return None
    return thread_candidates(physical_cores(), streams=one_slot and not options.show)


def plan_threads(
    model: str | Path, options: CameraOptions, capture: Any, one_slot: bool = True
) -> tuple[dict[Setting | None, list[Any]], ThreadChoice]:
    """The runners to start with, per setting (one runner per stream), and the choice so far: one
    setting when it is fixed (``--threads``/``--streams``, not CPU, one core, a backend that cannot
    run two settings side by side, a cached choice), else every candidate and ``how == "measuring"``
    (:class:`ThreadProbe` decides)."""
    from edge.runners import select_runner

    def make(threads: int | None) -> Any:
        runner = select_runner(model, device=options.device, backend=options.backend, threads=threads)
        # The capture thread decodes and preprocesses while the model runs: spinning inference threads
        # would starve it (measured: 40% -> 60% of batch-1 throughput, and no drops below model speed).
        # (measured again with just-in-time preprocessing, 224 px Lite0 at 2 threads: spinning only
        # within a call, ORT's session.force_spinning_stop, gave 94 FPS against 117 FPS without spinning).
        runner.spin_wait = False
        return runner

    def make_setting(setting: Setting, first: Any = None) -> list[Any]:
        runners = [first] if first is not None else []
        return runners + [make(threads_of(setting)) for _ in range(streams_of(setting) - len(runners))]

    candidates = inference_threads(options, one_slot)
    if candidates is None:
        return {None: [make(None)]}, ThreadChoice(None, "backend default")
    first = make(threads_of(candidates[0]))
    if first.backend not in MEASURED_BACKENDS and any(streams_of(c) > 1 for c in candidates):
        if options.streams is not None:
            first.deactivate()
            raise UserError(
                f"--streams needs a backend whose threads belong to one runner (onnxruntime, openvino), not {first.backend}"
            )
        candidates = [c for c in candidates if streams_of(c) == 1]
    if options.threads is not None or options.streams is not None:
        how = "--threads" if options.streams is None else "--streams" if options.threads is None else "--threads --streams"
        return {candidates[0]: make_setting(candidates[0], first)}, ThreadChoice(candidates[0], how)
    if len(candidates) == 1:
        return {candidates[0]: [first]}, ThreadChoice(candidates[0], "only one core")
    if first.backend not in MEASURED_BACKENDS:
        why = f"every core; not measured: {first.backend} sets threads for the whole process"
        return {candidates[0]: [first]}, ThreadChoice(candidates[0], why)
    key = _thread_key(first, options, capture, candidates) if options.thread_cache else None
    cached = load_thread_choice(key) if key is not None else None
    if cached is not None and cached["threads"] in candidates:
        choice = ThreadChoice.from_dict({**cached, "how": "cached", "cache": str(thread_choices_path()), "key": key})
        assert choice.threads is not None
        reuse = first if threads_of(choice.threads) == threads_of(candidates[0]) else None
        if reuse is None:
            first.deactivate()
        return {choice.threads: make_setting(choice.threads, reuse)}, choice
    runners: dict[Setting | None, list[Any]] = {candidates[0]: make_setting(candidates[0], first)}
    runners.update({t: make_setting(t) for t in candidates[1:]})
    return runners, ThreadChoice(None, "measuring", key=key)


def _thread_key(runner: Any, options: CameraOptions, capture: Any, candidates: list[Setting]) -> str:
    from edge.atomic import sha256_file
    from edge.manifest import manifest_path, read_manifest

    sha = read_manifest(runner.path).sha256 if manifest_path(runner.path).exists() else sha256_file(runner.path)
    width, height = int(capture.get(3) or 0), int(capture.get(4) or 0)  # CAP_PROP_FRAME_WIDTH / HEIGHT
    return thread_cache_key(sha, runner.backend, options.device, (width, height) if width and height else None, candidates)
