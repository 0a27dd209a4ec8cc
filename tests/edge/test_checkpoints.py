"""Reading checkpoints (edge/checkpoints.py): nothing in a file the harness opens ever runs.

A checkpoint is loaded with ``torch.load(weights_only=True)``: tensors and plain data only. A file
whose pickle would rebuild any other object (here: one whose unpickling touches a marker file, what
a malicious ``.pt`` does with a shell command) is refused with one line naming it, exit status 2,
and the marker is never created — through every command that opens a checkpoint or a ``--weights``
file. Commands run in-process through ``edge.cli.main`` (bench's torch row runs in its worker
subprocess) on timm's 100k-parameter ``test_efficientnet`` at 16 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.cli import main

torch = pytest.importorskip("torch")

ARCH = "test_efficientnet"
PX = 16
LABELS = ["a", "b"]


class TouchOnLoad:
    """Unpickling this calls ``Path.touch(marker)``: any code at all could run there instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A file that looks like an edge checkpoint in every field, with the trap hidden in its config."""
    from edge.checkpoints import CHECKPOINT_FORMAT
    from edge.spec import PreprocessSpec
    from train.models import build_model

    model = build_model(ARCH, num_classes=len(LABELS), pretrained=False)
    spec = PreprocessSpec(input_size=PX, resize_size=PX, crop="resize", labels=LABELS)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": ARCH,
        "num_classes": len(LABELS),
        "model_config": {},
        "state_dict": model.state_dict(),
        "spec": spec.to_dict(),
        "config": {"pretrained": True, "hook": TouchOnLoad(marker)},
        "history": [],
        "data_fingerprint": None,
        "training_state": None,
    }
    torch.save(payload, path)
    return path


@pytest.fixture
def trap(tmp_path: Path) -> dict[str, Path]:
    """bad.pt (no manifest), run/ holding it as checkpoint.pt and last.pt with a matching manifest
    (a run handed over by someone else), bare/ holding it as checkpoint.pt without one, a 2-class
    ImageFolder, a short video and the marker path."""
    cv2 = pytest.importorskip("cv2")
    from edge.manifest import write_manifest
    from edge.spec import PreprocessSpec

    marker = tmp_path / "MARKER"
    bad = write_malicious_checkpoint(tmp_path / "bad.pt", marker)
    run = tmp_path / "run"
    run.mkdir()
    spec = PreprocessSpec(input_size=PX, resize_size=PX, crop="resize", labels=LABELS)
    for name in ("checkpoint.pt", "last.pt"):
        write_malicious_checkpoint(run / name, marker)
        write_manifest(run / name, "checkpoint", spec, provenance={"arch": ARCH, "trained": False})
    bare = tmp_path / "bare"
    bare.mkdir()
    write_malicious_checkpoint(bare / "checkpoint.pt", marker)
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for label in LABELS:
        (data / label).mkdir(parents=True)
        for i in range(12):
            cv2.imwrite(str(data / label / f"{i}.png"), rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    video = tmp_path / "video.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    for _ in range(4):
        writer.write(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    writer.release()
    assert not marker.exists()
    return {"bad": bad, "run": run, "bare": bare, "data": data, "video": video, "marker": marker, "tmp": tmp_path}


SMALL_TRAINING = ("--model", ARCH, "--image-size", str(PX), "--epochs", "1", "--batch-size", "8", "--test-limit", "0")
BENCH = (
    "--artifacts", "torch-fp32", "--devices", "cpu", "--batch-sizes", "1", "--warmup-s", "0", "--min-iters", "1",
    "--min-seconds", "0", "--single-stream", "0", "--no-end-to-end", "--threads", "1", "--timeout", "120",
)  # fmt: skip

# name -> (argv with {bad} {run} {bare} {data} {video} {tmp} filled in, the file the error line must name)
COMMANDS = {
    "inspect a checkpoint file": (["inspect", "{bad}"], "{bad}"),
    "inspect --json": (["inspect", "--json", "{bad}"], "{bad}"),
    "export a run": (["export", "{run}"], "{run}/checkpoint.pt"),
    "export a checkpoint file": (["export", "{bad}", "--out", "{tmp}/model.onnx"], "{bad}"),
    "train --weights": (["train", "--out", "{tmp}/new", "--data", "{data}", "--weights", "{bad}", *SMALL_TRAINING], "{bad}"),
    "train --resume": (["train", "--out", "{run}", "--resume"], "{run}/last.pt"),
    "pretrained --weights": (["pretrained", "--model", ARCH, "--weights", "{bad}", "--out", "{tmp}/pre"], "{bad}"),
    "calibrate a run without manifests (the spec from the checkpoint)": (
        ["calibrate", "{bare}", "--data", "{data}", "--size", "4"],
        "{bare}/checkpoint.pt",
    ),
    "bench a run (torch-fp32)": (["bench", "{run}", "--eval", "{data}", "--out", "{tmp}/bench", *BENCH], "{run}/checkpoint.pt"),
    "camera on a checkpoint": (
        ["camera", "{bad}", "--source", "{video}", "--backend", "torch", "--max-frames", "1", "--threads", "1", "--quiet"],
        "{bad}",
    ),
    "camera on a run": (
        ["camera", "{run}", "--source", "{video}", "--backend", "torch", "--max-frames", "1", "--threads", "1", "--quiet"],
        "{run}/checkpoint.pt",
    ),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_malicious_checkpoint_is_refused_and_nothing_in_it_runs(trap, command, capsys):
    argv, named = COMMANDS[command]
    argv = [arg.format(**trap) for arg in argv]
    status = main(argv)
    err = capsys.readouterr().err
    assert not trap["marker"].exists(), f"`edge {' '.join(argv)}` ran code from the file"
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert named.format(**trap) in lines[0]
    assert "pickle" in lines[0] and "refused" in lines[0]
    assert "Traceback" not in err
    written = [trap["tmp"] / name for name in ("new", "pre", "model.onnx", "bench")] + [trap["run"] / "model.onnx"]
    assert [path for path in written if path.exists()] == []  # refused before any output was written


def save_zip(payload: object, path: Path) -> None:
    torch.save(payload, path)


def save_legacy_format(payload: object, path: Path) -> None:
    torch.save(payload, path, _use_new_zipfile_serialization=False)


def save_raw_pickle(payload: object, path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


@pytest.mark.parametrize("save", [save_zip, save_legacy_format, save_raw_pickle])
@pytest.mark.parametrize("reader", ["checkpoint", "weights file"])
def test_no_way_of_pickling_the_trap_gets_it_run(tmp_path, save, reader):
    """torch's zip format, its legacy format and a bare pickle: each is refused by both readers
    (the checkpoint reader and the --weights reader), and the marker is never created."""
    from edge.checkpoints import load_checkpoint
    from edge.errors import UserError
    from train.models import build_model, load_weights_file

    marker = tmp_path / "MARKER"
    path = tmp_path / "trap.pt"
    save({"format": "edge-checkpoint/1", "state_dict": {}, "hook": TouchOnLoad(marker)}, path)
    with pytest.raises(UserError, match=rf"^{path} (holds Python objects|is not a plain-tensor|is not a readable)"):
        if reader == "checkpoint":
            load_checkpoint(path)
        else:
            load_weights_file(build_model(ARCH, num_classes=2), path)
    assert not marker.exists()


def test_the_refusal_names_the_objects_and_the_way_out(tmp_path):
    from edge.checkpoints import load_checkpoint
    from edge.errors import UserError

    path = write_malicious_checkpoint(tmp_path / "bad.pt", tmp_path / "MARKER")
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"{path} holds Python objects (") and "pathlib.Path" in line
    assert "refused, nothing in it was run" in line and "torch.save(model.state_dict(), PATH)" in line
    assert "weights_only" not in line  # torch's own advice (load it unsafely) is not repeated


def test_a_plain_state_dict_still_loads_as_weights(tmp_path):
    from train.models import build_model, load_weights_file

    source = build_model(ARCH, num_classes=2)
    torch.save({"model": source.state_dict()}, tmp_path / "weights.pt")
    target = build_model(ARCH, num_classes=2)
    load_weights_file(target, tmp_path / "weights.pt")
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
