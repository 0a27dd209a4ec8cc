"""bench/verify_bundle.py (`edge verify`) and the verification set `edge pack` puts in a bundle
(edge/verification_set.py): pack -> unpack -> verify on this machine's ONNX Runtime and OpenVINO; a
doctored INT8 model fails with its flip count; an altered set is refused by its hash; and the
commands a device runs (inspect, bench, camera, verify) work where torch cannot be imported, and verify
passes there on this machine's ONNX Runtime and OpenVINO."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge.cli import main
from edge.verification_set import read_verification_set

COUNT = 64  # verification images: enough to judge a doctored model, quick to pack and run


@pytest.fixture(scope="module")
def bundle(pipeline_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline run packed with a verification set and unpacked: the folder with bundle.json."""
    root = tmp_path_factory.mktemp("bundle")
    archive = root / "deploy.tar.gz"
    assert main(["pack", str(pipeline_run), "--out", str(archive), "--verify-images", str(COUNT)]) == 0
    with tarfile.open(archive) as tar:
        tar.extractall(root / "device", filter="data")
    return root / "device" / pipeline_run.name


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / bundle.name))


def test_the_set_is_the_pinned_test_split_exactly_as_apply_gives_it(bundle: Path, pipeline_run: Path) -> None:
    """uint8 after resize/crop + the spec's normalisation on reading == spec.apply of the test image,
    bit for bit; the logits are model.onnx's on those inputs; the sha256 in bundle.json is the file's."""
    from edge.artifact_spec import artifact_spec
    from edge.runners import select_runner
    from train.splits import run_data

    index = json.loads((bundle / "bundle.json").read_text())["verification"]
    data = (bundle / "verification.npz").read_bytes()
    assert index["sha256"] == hashlib.sha256(data).hexdigest() and index["size_bytes"] == len(data)
    assert index["count"] == COUNT and index["split"] == "test" and index["reference"] == "onnx-fp32"
    spec = artifact_spec(bundle / "model.onnx")
    vset = read_verification_set(bundle / "verification.npz", index["sha256"], spec)
    split = run_data(pipeline_run).split("test", limit=COUNT, seed=0)
    assert index["fingerprint"] == split.fingerprint()
    assert np.array_equal(vset.labels, split.labels)
    applied = spec.apply_batch([split.image(i) for i in range(COUNT)])
    assert vset.images.dtype == np.uint8 and np.array_equal(vset.inputs(spec), applied)  # exact, at 1 byte a pixel
    with select_runner(bundle / "model.onnx") as runner:
        assert np.array_equal(runner.infer(applied), vset.logits)
    assert len(data) < applied.nbytes / 8  # compact: uint8 gray, deflated


def _scale_first_conv_weights(model_path: Path, factor: float) -> None:
    """One layer's weights scaled: the scale of the first quantized Conv's weight DequantizeLinear
    (QDQ; auto may have kept the first Conv in float)."""
    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    dq = next(
        producer[node.input[1]]
        for node in model.graph.node
        if node.op_type == "Conv" and getattr(producer.get(node.input[1]), "op_type", None) == "DequantizeLinear"
    )
    scale = inits[dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    onnx.save(model, str(model_path))


def _rehash(model_path: Path) -> None:
    """The manifest made to vouch for the doctored file (as an engine built badly on the device would be)."""
    manifest_file = model_path.with_name(model_path.name + ".json")
    manifest = json.loads(manifest_file.read_text())
    manifest.update(sha256=hashlib.sha256(model_path.read_bytes()).hexdigest(), size_bytes=model_path.stat().st_size)
    manifest_file.write_text(json.dumps(manifest))


def test_a_doctored_int8_model_fails_with_its_flip_count(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doctored = copy_of(bundle, tmp_path)
    _scale_first_conv_weights(doctored / "model.int8-cpu.onnx", 4.0)
    _rehash(doctored / "model.int8-cpu.onnx")
    assert main(["verify", str(doctored), "--artifacts", "int8-cpu"]) == 1
    out = capsys.readouterr().out
    fail = next(line for line in out.splitlines() if line.startswith("FAIL int8-cpu on onnxruntime@cpu"))
    flips = int(fail.split("(")[1].split(" flips of ")[0])
    assert flips > 0 and f"flips of {COUNT}" in fail and "below it beyond sampling noise" in fail
    assert "verify FAILED" in out


def test_an_altered_verification_set_is_refused_by_its_hash(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    altered = copy_of(bundle, tmp_path)
    data = bytearray((altered / "verification.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (altered / "verification.npz").write_bytes(bytes(data))
    assert main(["verify", str(altered)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "verification.npz does not match the sha256 in" in err[0] and "altered" in err[0]
    assert "Traceback" not in captured.err and "PASS" not in captured.out  # refused before anything ran


def test_device_commands_run_where_torch_cannot_be_imported(bundle: Path, tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    """inspect, bench, camera (a video file) and verify on the unpacked bundle, with torch blocked;
    verify passes on ONNX Runtime and OpenVINO, lists CUDA n/a, and writes JUnit and Markdown."""
    from edge.camera.demo import write_demo_video

    blocker = tmp_path / "no-torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked: a device install has no torch')\n")
    video = write_demo_video(tmp_path / "clip.mp4", size=(64, 48), fps=6, seconds_per_photo=0.5, photos=photos).path
    root = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ, PYTHONPATH=f"{blocker.parent}{os.pathsep}{root}", OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache")
    )

    def edge(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, f"edge {' '.join(args)}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout

    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "torch is blocked" in probe.stderr
    assert "int8-cpu" in edge("inspect", str(bundle))
    bench_out = tmp_path / "bench"
    quick = "--artifacts int8-cpu --devices cpu --batch-sizes 1 --warmup-s 0 --min-iters 2 --min-seconds 0 --rounds 1"
    edge("bench", str(bundle), *quick.split(), "--single-stream", "0", "--threads", "1", "--out", str(bench_out))
    rows = json.loads((bench_out / "report.json").read_text())["rows"]
    assert [(r["artifact"], r["status"]) for r in rows] == [("int8-cpu", "ok")] and rows[0]["cells"][0]["status"] == "ok"
    jsonl = tmp_path / "frames.jsonl"
    frames = ["--every-frame", "--max-frames", "2", "--threads", "1"]
    edge("camera", str(bundle / "model.int8-cpu.onnx"), "--source", str(video), *frames, "--jsonl", str(jsonl))
    assert len(jsonl.read_text().splitlines()) == 2

    junit, markdown = tmp_path / "verify.xml", tmp_path / "verify.md"
    assert "verify passed" in edge("verify", str(bundle), "--junit", str(junit), "--markdown", str(markdown))
    suite = ET.parse(junit).getroot()
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert suite.get("name") == "edge-verify" and suite.get("failures") == "0"
    ran = ["onnx-fp32 on onnxruntime@cpu", "int8-cpu on onnxruntime@cpu"]
    if importlib.util.find_spec("openvino") is not None:
        ran += ["openvino-fp32 on openvino@cpu", "openvino-int8 on openvino@cpu"]
    for name in ran:
        assert cases[name].find("failure") is None and cases[name].find("skipped") is None, name
        assert f"of {COUNT}" in cases[name].findtext("system-out", ""), name
    assert "agreement 100.00% (0 flips of 64" in cases["onnx-fp32 on onnxruntime@cpu"].findtext("system-out", "")
    assert "accepted with" in cases["int8-cpu on onnxruntime@cpu"].findtext("system-out", "")
    absent = cases["onnx-fp32 on onnxruntime@cuda"].find("skipped")  # no CUDA here: n/a, not a failure
    assert absent is not None and "n/a" in absent.get("message", "")
    assert "| onnx-fp32 | onnxruntime@cpu | 64 | 100.00 |" in markdown.read_text()
