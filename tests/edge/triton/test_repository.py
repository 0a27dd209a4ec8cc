"""edge triton: every generated config.pbtxt parses into Triton's own ModelConfig schema, and the
repository follows Triton's layout (model folder, numbered version, default file names, labels)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="Triton's schema comes with tritonclient (the dev extra)")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from edge.artifact_spec import artifact_spec  # noqa: E402
from edge.errors import UserError  # noqa: E402
from edge.manifest import (
    read_manifest,  # noqa: E402
    write_manifest,  # noqa: E402
)
from edge.triton.models import DEFAULT_PREFERRED_BATCH_SIZES, Options  # noqa: E402
from edge.triton.pbtxt import parse_config  # noqa: E402
from edge.triton.repository import layout_problems, write_repository  # noqa: E402
from tests.edge.triton.conftest import add_engine  # noqa: E402


def load_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """config.pbtxt parsed by protobuf itself into Triton's ModelConfig (raises on any schema error)."""
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), config)
    return config


def onnx_signature(path: Path) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(value: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in value.type.tensor_type.shape.dim][1:]  # without the batch axis

    return [(v.name, dims(v)) for v in graph.input], [(v.name, dims(v)) for v in graph.output]


def test_onnx_models_match_their_graphs_and_triton_schema(triton_run: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    plans, notes = write_repository(triton_run, repo, Options())
    assert sorted(p.name for p in plans) == ["fashion-int8-cpu", "fashion-onnx-fp32"]
    spec = artifact_spec(triton_run / "model.onnx")
    (in_name, in_dims), (out_name, out_dims) = (s[0] for s in onnx_signature(triton_run / "model.onnx"))
    for name, source in (("fashion-onnx-fp32", "model.onnx"), ("fashion-int8-cpu", "model.int8-cpu.onnx")):
        model_dir = repo / name
        config = load_config(model_dir)
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert [(i.name, list(i.dims), i.data_type) for i in config.input] == [(in_name, in_dims, model_config_pb2.TYPE_FP32)]
        assert [(o.name, list(o.dims), o.label_filename) for o in config.output] == [(out_name, out_dims, "labels.txt")]
        assert config.max_batch_size == 32  # the dynamic batch axis: the documented default maximum
        assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
        assert config.model_warmup[0].inputs[in_name].zero_data and list(config.model_warmup[0].inputs[in_name].dims) == in_dims
        assert (model_dir / "labels.txt").read_text().splitlines() == list(spec.labels)
        assert (model_dir / "1" / "model.onnx").read_bytes() == (triton_run / source).read_bytes()
        assert config.parameters["edge_preprocess_spec"].string_value.startswith("{")
        assert layout_problems(model_dir) == []
    # preferred sizes: onnx-fp32 from the report (8 and 32 reach 90% of the best within max 32), int8-cpu: defaults
    assert list(load_config(repo / "fashion-onnx-fp32").dynamic_batching.preferred_batch_size) == [8, 32]
    assert list(load_config(repo / "fashion-int8-cpu").dynamic_batching.preferred_batch_size) == list(
        DEFAULT_PREFERRED_BATCH_SIZES
    )
    readme = (repo / "README.md").read_text()
    assert f"tritonserver --model-repository={repo.resolve()}" in readme
    assert f"mean {list(spec.mean)}" in readme and "fashion-onnx-fp32" in readme


def test_engines_become_one_model_per_precision_with_a_plan_per_architecture(triton_run: Path, tmp_path: Path) -> None:
    orin = add_engine(triton_run, "orin-sm87-trt10.3.0", "fp16", "8.7", "10.3.0.30", batch=(1, 8, 16))
    h200 = add_engine(triton_run, "nvidia-h200-sm90-trt10.3.0", "fp16", "9.0", "10.3.0.26")
    newer = add_engine(triton_run, "nvidia-h200-sm90-trt11.0.0", "fp16", "9.0", "11.0.0.1")
    repo = tmp_path / "repo"
    plans, _ = write_repository(triton_run, repo, Options())
    names = sorted(p.name for p in plans)
    assert names == ["fashion-int8-cpu", "fashion-onnx-fp32", "fashion-trt-fp16-trt10.3", "fashion-trt-fp16-trt11.0"]
    config = load_config(repo / "fashion-trt-fp16-trt10.3")
    assert config.platform == "tensorrt_plan"
    assert dict(config.cc_model_filenames) == {
        "8.7": "model.orin-sm87-trt10.3.0.plan",
        "9.0": "model.nvidia-h200-sm90-trt10.3.0.plan",
    }
    assert config.max_batch_size == 16  # the smallest profile max: every architecture's plan takes it
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    assert config.output[0].name == "logits" and list(config.output[0].dims) == [10]
    for engine, name in ((orin, "model.orin-sm87-trt10.3.0.plan"), (h200, "model.nvidia-h200-sm90-trt10.3.0.plan")):
        assert (repo / "fashion-trt-fp16-trt10.3" / "1" / name).read_bytes() == engine.read_bytes()
    assert dict(load_config(repo / "fashion-trt-fp16-trt11.0").cc_model_filenames) == {
        "9.0": "model.nvidia-h200-sm90-trt11.0.0.plan"
    }
    assert (repo / "fashion-trt-fp16-trt11.0" / "1" / "model.nvidia-h200-sm90-trt11.0.0.plan").read_bytes() == newer.read_bytes()
    for model_dir in repo.iterdir():
        if model_dir.is_dir():
            assert layout_problems(model_dir) == [], model_dir


def test_gpu_option_uses_ort_tensorrt_accelerator(triton_run: Path, tmp_path: Path) -> None:
    shutil.copyfile(triton_run / "model.onnx", triton_run / "model.int8-trt.onnx")
    spec = artifact_spec(triton_run / "model.onnx")  # with its manifest: a bare file is unverified and left out
    write_manifest(triton_run / "model.int8-trt.onnx", "onnx-int8-trt", spec, parent=triton_run / "model.onnx")
    repo = tmp_path / "repo"
    write_repository(triton_run, repo, Options(gpu=True, trt_precision="fp16", instances=2))
    for name, precision, kind in (("fashion-onnx-fp32", "FP16", "KIND_GPU"), ("fashion-int8-trt", "INT8", "KIND_GPU")):
        config = load_config(repo / name)
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
        assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == precision
        assert accelerator.parameters["trt_engine_cache_enable"] == "true"
        assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.Kind.Value(kind), 2)]
    int8_cpu = load_config(repo / "fashion-int8-cpu")  # ONNX Runtime CPU's format stays on the CPU
    assert not int8_cpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert int8_cpu.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_schema_refuses_unknown_fields_and_wrong_enums(triton_run: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repository(triton_run, repo, Options())
    text = (repo / "fashion-onnx-fp32" / "config.pbtxt").read_text()
    assert parse_config(text).name == "fashion-onnx-fp32"
    with pytest.raises(UserError, match="max_batch_sizes"):
        parse_config(text.replace("max_batch_size:", "max_batch_sizes:"))
    with pytest.raises(UserError, match="KIND_TPU"):
        parse_config(text.replace("KIND_CPU", "KIND_TPU"))
    with pytest.raises(UserError, match="TYPE_FLOAT32"):
        parse_config(text.replace("TYPE_FP32", "TYPE_FLOAT32", 1))
    (repo / "fashion-onnx-fp32" / "1" / "model.onnx").unlink()
    assert layout_problems(repo / "fashion-onnx-fp32") == ["1/ lacks model.onnx"]
    (repo / "fashion-onnx-fp32" / "labels.txt").unlink()
    shutil.rmtree(repo / "fashion-onnx-fp32" / "1")
    assert layout_problems(repo / "fashion-onnx-fp32") == [
        "fashion-onnx-fp32 has no numbered version directory (1/)",
        "label file labels.txt is missing",
    ]


def test_rejected_and_tampered_artifacts(triton_run: Path, tmp_path: Path) -> None:
    from edge.manifest import update_metrics

    update_metrics(triton_run / "model.int8-cpu.onnx", {"accepted": False, "reason": "drop 3.1 points > 1.0"})
    plans, notes = write_repository(triton_run, tmp_path / "repo", Options())
    assert [p.name for p in plans] == ["fashion-onnx-fp32"]
    assert any("model.int8-cpu.onnx left out" in n and "drop 3.1 points" in n for n in notes)
    plans, _ = write_repository(triton_run, tmp_path / "forced", Options(force=True))
    assert len(plans) == 2
    (triton_run / "model.onnx").write_bytes(b"not the exported model")
    assert read_manifest(triton_run / "model.onnx").kind == "onnx"
    with pytest.raises(UserError, match="does not match its manifest"):
        write_repository(triton_run, tmp_path / "tampered", Options())
    assert not (tmp_path / "tampered").exists() or not any((tmp_path / "tampered").iterdir())


def run_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_repository_and_fails_in_one_line(triton_run: Path, tmp_path: Path) -> None:
    proc = run_edge("triton", str(triton_run), "--out", str(tmp_path / "repo"), "--name", "fm", "--artifacts", "onnx-fp32")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["README.md", "fm-onnx-fp32"]
    assert "fm-onnx-fp32" in proc.stdout
    missing = run_edge("triton", str(tmp_path / "nope"), "--out", str(tmp_path / "repo2"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    bad = run_edge("triton", str(triton_run), "--out", str(tmp_path / "repo3"), "--instances", "0")
    assert bad.returncode == 2 and "--instances 0" in bad.stderr


def test_a_replaced_model_folder_and_readme_are_kept_beside_the_repository(
    triton_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    repo = tmp_path / "repo"
    args = ["triton", str(triton_run), "--out", str(repo), "--name", "fm", "--artifacts", "onnx-fp32"]
    assert main(args) == 0
    (repo / "fm-onnx-fp32" / "2").mkdir()
    (repo / "fm-onnx-fp32" / "2" / "model.onnx").write_bytes(b"a version the user added")
    (repo / "theirs" / "1").mkdir(parents=True)  # another model: left alone, nothing of it kept
    (repo / "theirs" / "config.pbtxt").write_text('name: "theirs"\n')
    before = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*args, "--max-batch", "16"]) == 0

    (kept,) = (tmp_path / "history").iterdir()  # beside the repository: Triton would load history/ as a model
    assert not (repo / "history").exists()
    saved = {p.relative_to(kept).as_posix(): p.read_bytes() for p in kept.rglob("*") if p.is_file()}
    assert saved == {name: data for name, data in before.items() if not name.startswith("repo/theirs/")}
    assert not (repo / "fm-onnx-fp32" / "2").exists()  # the new model folder replaced the whole old one
    assert "max_batch_size: 16" in (repo / "fm-onnx-fp32" / "config.pbtxt").read_text()
    assert (repo / "theirs" / "config.pbtxt").read_text() == 'name: "theirs"\n'
    out = capsys.readouterr().out
    assert f"kept the previous {', '.join(sorted(saved))} in {kept}/ (edge triton replaces them)" in out


def test_a_repository_in_the_run_keeps_its_history_in_the_run(triton_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    args = ["triton", str(triton_run), "--out", str(triton_run / "triton"), "--name", "fm", "--artifacts", "onnx-fp32"]
    assert main(args) == 0 and main(args) == 0
    (kept,) = (triton_run / "history").iterdir()
    assert (kept / "triton" / "fm-onnx-fp32" / "config.pbtxt").is_file() and (kept / "triton" / "README.md").is_file()
    assert not (triton_run / "triton" / "history").exists()
