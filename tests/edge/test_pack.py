"""edge/pack.py: an artifact that edge quantize did not accept (manifest ``accepted: false``) is not
bundled unless --force, which records it in the bundle's manifest."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import UserError
from edge.manifest import read_manifest, write_manifest
from edge.pack import pack_run
from edge.run import RunDir
from edge.spec import PreprocessSpec

SPEC = PreprocessSpec(input_size=16, resize_size=16, crop="resize", labels=("a", "b", "c"))
ENV = {"hostname": "test"}  # skips the environment probe in write_manifest
REASON = "top-1 drop 0.82 points on 1000 test images exceeds --max-drop 0.5"


def make_run(tmp_path: Path, accepted: bool | None) -> RunDir:
    """model.onnx and model.int8-cpu.onnx (stand-in bytes: pack never loads them) with manifests."""
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.onnx.write_bytes(b"float model")
    write_manifest(run.onnx, "onnx", SPEC, environment=ENV)
    run.int8_cpu.write_bytes(b"int8 model")
    metrics = {} if accepted is None else {"accepted": accepted, "reason": None if accepted else REASON}
    write_manifest(run.int8_cpu, "onnx-int8-cpu", SPEC, parent=run.onnx, metrics=metrics, environment=ENV)
    return run


def names(bundle: Path) -> list[str]:
    with tarfile.open(bundle) as archive:
        return archive.getnames()


@pytest.mark.parametrize("accepted", [True, None])  # None: a manifest from before acceptance was recorded
def test_accepted_artifacts_are_bundled(tmp_path: Path, accepted: bool | None) -> None:
    run = make_run(tmp_path, accepted)
    bundle = pack_run(run.root, tmp_path / "deploy.tar.gz")
    assert "run/model.int8-cpu.onnx" in names(bundle)
    assert read_manifest(bundle).provenance["not_accepted"] == {}


def test_unaccepted_artifact_is_refused_naming_force(tmp_path: Path) -> None:
    run = make_run(tmp_path, accepted=False)
    with pytest.raises(UserError, match=r"model.int8-cpu.onnx was not accepted: top-1 drop 0.82 points .* pass --force"):
        pack_run(run.root, tmp_path / "deploy.tar.gz")
    assert not (tmp_path / "deploy.tar.gz").exists()


def test_cli_refusal_is_one_line_exit_2_and_force_bundles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, accepted=False)
    out = tmp_path / "deploy.tar.gz"
    assert main(["pack", str(run.root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge pack: error: model.int8-cpu.onnx was not accepted") and "--force" in err[0]
    assert not out.exists()
    assert main(["pack", str(run.root), "--out", str(out), "--force"]) == 0
    assert "run/model.int8-cpu.onnx" in names(out)
    assert read_manifest(out).provenance["not_accepted"] == {"model.int8-cpu.onnx": REASON}
    assert '"not_accepted"' in capsys.readouterr().out


def test_engine_built_with_force_is_refused_too(tmp_path: Path) -> None:
    run = make_run(tmp_path, accepted=True)
    engine = run.engine_file("NVIDIA H200", "9.0", "10.13.0.35", "int8")
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"serialized engine")
    reason = f"built with --force from model.int8-trt.onnx, not accepted: {REASON}"
    write_manifest(engine, "engine", SPEC, metrics={"accepted": False, "reason": reason}, environment=ENV)
    with pytest.raises(UserError, match=r"engines/nvidia-h200-sm90-trt10.13.0/model.int8.engine was not accepted: built with"):
        pack_run(run.root)


def test_malformed_verdict_is_a_user_error(tmp_path: Path) -> None:
    run = make_run(tmp_path, accepted=True)
    write_manifest(run.int8_cpu, "onnx-int8-cpu", SPEC, metrics={"accepted": "yes"}, environment=ENV)
    with pytest.raises(UserError, match=r"manifest says accepted: 'yes' \(not true or false\)"):
        pack_run(run.root)


def test_bundle_says_which_backends_run_each_artifact(tmp_path: Path) -> None:
    """In the bundle's manifest and in bundle.json inside the archive: the CPU INT8 model (uint8
    activations) is for ONNX Runtime and OpenVINO, not TensorRT; an engine is TensorRT's only."""
    run = make_run(tmp_path, accepted=True)
    engine = run.engine_file("NVIDIA H200", "9.0", "10.13.0.35", "fp16")
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"serialized engine")
    write_manifest(engine, "engine", SPEC, environment=ENV)
    bundle = pack_run(run.root, tmp_path / "deploy.tar.gz")
    expected = {
        "model.onnx": ["onnxruntime", "ort-tensorrt", "openvino"],
        "model.int8-cpu.onnx": ["onnxruntime", "openvino"],
        "engines/nvidia-h200-sm90-trt10.13.0/model.fp16.engine": ["tensorrt"],
    }
    provenance = read_manifest(bundle).provenance
    assert provenance["backends"] == expected
    assert provenance["install"]["openvino"] == "pip install -e '.[openvino]'"
    assert provenance["install"]["tensorrt"] == "pip install -e '.[tensorrt]'"
    assert set(provenance["install"]) == {"onnxruntime", "ort-tensorrt", "openvino", "tensorrt"}
    with tarfile.open(bundle) as archive:
        index = json.load(archive.extractfile("run/bundle.json"))  # type: ignore[arg-type]
    assert index["backends"] == expected and index["install"] == provenance["install"] and index["run"] == "run"
    assert index["contents"] == provenance["contents"] and "bundle.json" not in index["contents"]


def test_verification_set_needs_a_pinned_split_and_a_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Asked for, a set needs the run's pinned test split; by default a run without one (a pretrained
    run) is packed without a set, and the log says so; a negative count is refused before any work."""
    run = make_run(tmp_path, accepted=True)
    with pytest.raises(UserError, match=r"has no pinned test split \(splits.json\).*--verify-images 0"):
        pack_run(run.root, tmp_path / "deploy.tar.gz", verify_images=8)
    with pytest.raises(UserError, match=r"--verify-images must be >= 0"):
        pack_run(run.root, tmp_path / "deploy.tar.gz", verify_images=-1)
    bundle = pack_run(run.root, tmp_path / "deploy.tar.gz")
    assert read_manifest(bundle).provenance["verification"] is None
    assert "no verification set" in caplog.text and "run/verification.npz" not in names(bundle)
