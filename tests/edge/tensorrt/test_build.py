"""edge/tensorrt and the tensorrt runner (edge/runners/tensorrt_*.py, cuda_io.py): argument validation,
the version branch, engine naming (edge/run.py), compatibility against recorded manifests of other
TensorRT versions and GPUs, engine choice, the absent-TensorRT messages, the API names each version
branch uses, mypy against tensorrt-stubs; and, marked gpu/tensorrt, the CUDA buffer/stream code, the
torch CUDA runner, real engine builds and runs."""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.artifact_spec import artifact_spec
from edge.errors import UserError
from edge.manifest import read_manifest, write_manifest
from edge.run import TIMING_CACHE, RunDir, engine_dir_name, trt_version_tuple
from edge.runners import cuda_io, select_runner, tensorrt_available
from edge.runners import tensorrt_engines as E
from edge.runners.tensorrt_runner import TensorRTRunner
from edge.spec import PreprocessSpec
from edge.tensorrt import build as T

ROOT = Path(__file__).resolve().parents[3]
# Every module that calls the TensorRT API: the name scan and mypy read all of them.
TENSORRT_SOURCES = ("edge/tensorrt/build.py", "edge/runners/tensorrt_engines.py", "edge/runners/tensorrt_runner.py")
DATA = Path(__file__).parent.parent / "data"
RECORDED = DATA / "engine_manifests"
SPEC = PreprocessSpec(input_size=16, resize_size=16, crop="resize", labels=("a", "b", "c"))
ENV = {"hostname": "test"}  # skips the environment probe in write_manifest
H200_TRT10 = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"}
needs_no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="checks the messages shown where TensorRT is absent")


def recorded(name: str) -> dict:
    return json.loads((RECORDED / name).read_text())


def tiny_onnx(path: Path, spec: PreprocessSpec = SPEC, seed: int = 0) -> Path:
    """Conv -> ReLU -> GlobalAveragePool -> Flatten -> Gemm with a dynamic batch, built in code."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    classes, size = len(spec.labels), spec.input_size
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
        numpy_helper.from_array(rng.standard_normal((classes, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    write_manifest(path, "onnx", spec, provenance={"opset": 17}, environment=ENV)
    return path


def fake_engine(run: RunDir, manifest: dict, parent: Path | None = None) -> Path:
    """An engine file with a recorded manifest (re-hashed for this file) in its machine folder."""
    prov = manifest["provenance"]
    path = run.engine_file(prov["gpu_name"], prov["compute_capability"], prov["tensorrt_version"], prov["precision"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"serialized engine " + path.name.encode())
    write_manifest(path, "engine", SPEC, parent=parent, provenance=prov, environment=manifest["environment"])
    return path


# ---- arguments --------------------------------------------------------------------------------


def test_batch_range_parses_and_explains():
    assert T.parse_batch_range("1:8:32") == (1, 8, 32)
    assert T.parse_batch_range("4") == (4, 4, 4)
    for bad in ("8:1:32", "0:1:2", "1:8", "a:b:c", "1:8:32:64"):
        with pytest.raises(UserError, match=r"--batch .* MIN:OPT:MAX"):
            T.parse_batch_range(bad)


def test_engine_folder_names_machine_and_version():
    assert engine_dir_name("NVIDIA H200", "9.0", "10.13.0.35") == "nvidia-h200-sm90-trt10.13.0"
    assert engine_dir_name("Orin (nvgpu)", "8.7", "10.3.0.30") == "orin-nvgpu-sm87-trt10.3.0"
    run = RunDir(Path("runs/x"))
    assert run.engine_file("NVIDIA H200", "9.0", "11.1.0.8", "int8") == Path(
        "runs/x/engines/nvidia-h200-sm90-trt11.1.0/model.int8.engine"
    )


def run_dir_with_onnx(tmp_path: Path, int8: bool = False, accepted: bool | None = None) -> RunDir:
    """A run with a tiny model.onnx; ``int8``: a stand-in model.int8-trt.onnx whose manifest says
    ``accepted`` (None: no verdict recorded, as before acceptance was)."""
    run = RunDir(tmp_path / "run")
    tiny_onnx(run.onnx)
    if int8:
        shutil.copy(run.onnx, run.int8_trt)
        metrics = {} if accepted is None else {"accepted": accepted, "reason": None if accepted else UNACCEPTED}
        write_manifest(run.int8_trt, "onnx-int8-trt", SPEC, parent=run.onnx, metrics=metrics, environment=ENV)
    return run


UNACCEPTED = "top-1 agreement 98.10% on 1000 test images (19 flips) is below --min-agreement 99 beyond sampling noise"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": None}, r"give --precision fp32\|fp16\|int8"),
        ({"precision": "fp8"}, r"unknown precision 'fp8'"),
        ({"batch": "32:8:1"}, r"--batch '32:8:1'"),
        ({"workspace_gib": 0}, r"--workspace must be a positive"),
        ({"dla_core": -1}, r"--dla takes a DLA core number"),
        ({"timing_cache": "/nonexistent/dir/t.cache"}, r"--timing-cache .*folder /nonexistent/dir does not exist"),
        ({"precision": "int8"}, r"model.int8-trt.onnx does not exist: make it with `edge quantize .* --target trt`"),
    ],
)
def test_validate_request_rejects_bad_arguments_first(tmp_path, kwargs, message):
    run = run_dir_with_onnx(tmp_path)
    args = {"precision": "fp16", **kwargs}
    with pytest.raises(UserError, match=message):
        T.validate_request(run.root, **args)


def test_validate_request_names_missing_run_and_onnx(tmp_path):
    with pytest.raises(UserError, match=r"run directory .* does not exist"):
        T.validate_request(tmp_path / "nope", "fp16")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"model.onnx does not exist: make it with `edge export"):
        T.validate_request(tmp_path / "empty", "fp32")
    request = T.validate_request(run_dir_with_onnx(tmp_path).root, "fp16", "2:4:8", 1.5, timing_cache=tmp_path / "t.cache")
    assert request.precisions == ("fp16",) and request.batch == (2, 4, 8) and request.timing_cache == tmp_path / "t.cache"


def edge_cli(argv, capsys):
    from edge.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_int8_from_an_unaccepted_parent_is_refused_unless_forced(tmp_path):
    run = run_dir_with_onnx(tmp_path, int8=True, accepted=False)
    with pytest.raises(
        UserError,
        match=r"model.int8-trt.onnx was not accepted by edge quantize \(top-1 agreement 98.10% .*\): requantize it "
        r"\(`edge quantize .* --target trt`\), or pass --force to build the int8 engine anyway",
    ):
        T.validate_request(run.root, "int8")
    assert T.validate_request(run.root, "int8", force=True).force is True
    assert T.validate_request(run.root, "fp16").precisions == ("fp16",)  # fp16 comes from model.onnx


@pytest.mark.parametrize("accepted", [True, None])
def test_int8_from_an_accepted_or_older_parent_is_built(tmp_path, accepted):
    run = run_dir_with_onnx(tmp_path, int8=True, accepted=accepted)
    assert T.validate_request(run.root, "int8").precisions == ("int8",)


def test_engine_command_refuses_unaccepted_int8_before_looking_for_tensorrt(tmp_path, capsys):
    run = run_dir_with_onnx(tmp_path, int8=True, accepted=False)
    code, err = edge_cli(["engine", str(run.root), "--precision", "int8"], capsys)
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("edge engine: error: model.int8-trt.onnx was not accepted by edge quantize") and "--force" in err
    assert "TensorRT" not in err and not run.engines.exists()


@needs_no_tensorrt
def test_forced_engine_command_goes_on_to_tensorrt(tmp_path, capsys):
    run = run_dir_with_onnx(tmp_path, int8=True, accepted=False)
    code, err = edge_cli(["engine", str(run.root), "--precision", "int8", "--force"], capsys)
    assert code == 2 and "TensorRT is not installed" in err and "not accepted" not in err


def test_rebuild_stale_leaves_an_unaccepted_int8_parent_alone(tmp_path, caplog):
    run = run_dir_with_onnx(tmp_path, int8=True, accepted=False)
    request = T.validate_request(run.root, "fp32", rebuild_stale=True)
    with caplog.at_level("WARNING"):
        assert T.with_stale(request, ["fp16", "int8"]) == ["fp32", "fp16"]
    assert "not rebuilding the stale int8 engine: its parent was not accepted" in caplog.text
    forced = T.validate_request(run.root, "fp32", rebuild_stale=True, force=True)
    assert T.with_stale(forced, ["fp32", "int8"]) == ["fp32", "int8"]


@needs_no_tensorrt
def test_engine_command_without_tensorrt_is_one_line_exit_2(tmp_path, capsys):
    run = run_dir_with_onnx(tmp_path)
    code, err = edge_cli(["engine", str(run.root), "--precision", "fp16", "--batch", "1:4:8"], capsys)
    assert code == 2
    assert err.count("\n") == 0 and "TensorRT is not installed" in err and err.startswith("edge engine: error:")
    assert not run.engines.exists()  # nothing half-made


def test_engine_command_validates_before_looking_for_tensorrt(tmp_path, capsys):
    run = run_dir_with_onnx(tmp_path)
    code, err = edge_cli(["engine", str(run.root), "--precision", "fp16", "--batch", "8:1"], capsys)
    assert code == 2 and "--batch '8:1'" in err and "TensorRT" not in err
    with pytest.raises(SystemExit) as exit_info:
        edge_cli(["engine", str(run.root), "--precision", "fp64"], capsys)
    assert exit_info.value.code == 2


def test_help_says_unverified(capsys):
    from edge.cli import build_parser

    parser = build_parser("engine")
    with pytest.raises(SystemExit):
        parser.parse_args(["engine", "--help"])
    out = capsys.readouterr().out
    assert "not yet verified on hardware" in " ".join(out.split())
    assert "not yet verified on hardware" in (T.__doc__ or "")


@needs_no_tensorrt
def test_selftest_and_runner_without_tensorrt(tmp_path, capsys):
    code, err = edge_cli(["selftest"], capsys)
    assert code == 2 and "edge selftest --tensorrt" in err
    code, err = edge_cli(["selftest", "--tensorrt", "--run", str(tmp_path / "r")], capsys)
    assert code == 2 and "TensorRT is not installed" in err and err.count("\n") == 0
    run = RunDir(tmp_path / "run")
    engine = fake_engine(run, recorded("h200-trt10.13-int8.json"))
    with pytest.raises(UserError, match="TensorRT is not installed"):
        select_runner(engine, device="cuda")
    with pytest.raises(UserError, match="TensorRT is not installed"):
        select_runner(run.root, device="cuda", backend="tensorrt")


def test_tensorrt_runner_needs_cuda_and_a_manifest(tmp_path):
    run = RunDir(tmp_path / "run")
    engine = fake_engine(run, recorded("h200-trt10.13-int8.json"))
    with pytest.raises(UserError, match="run on a CUDA device, not 'cpu': use --device cuda"):
        TensorRTRunner(engine, SPEC, device="cpu")
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"x")
    with pytest.raises(UserError, match="has no manifest"):
        TensorRTRunner(bare, SPEC)
    runner = TensorRTRunner(engine, artifact_spec(engine))
    assert runner.spec == SPEC and runner.describe()["unverified"] == E.UNVERIFIED


def test_selector_builds_the_tensorrt_runner_like_the_others(tmp_path, monkeypatch):
    import edge.runners

    run = RunDir(tmp_path / "run")
    engine = fake_engine(run, recorded("h200-trt10.13-int8.json"))
    monkeypatch.setattr(edge.runners, "require_tensorrt", lambda purpose="": None)  # construction needs no TensorRT
    runner = select_runner(engine, device="cuda", threads=2, max_batch=4, cuda_graphs=True, check_compatibility=False)
    assert isinstance(runner, TensorRTRunner) and runner.spec == SPEC and not runner.is_active
    assert (runner.threads, runner.max_batch, runner.cuda_graphs, runner.check_compatibility) == (2, 4, True, False)
    assert runner.manifest.provenance["tensorrt_version"] == "10.13.0.35"


# ---- the version branch -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, precision, dla, network, flags, source",
    [
        ("10.3.0.30", "fp32", None, (), (), "fp32"),
        ("10.3.0.30", "fp16", None, (), ("FP16",), "fp32"),
        ("10.3.0.30", "int8", None, (), ("INT8", "FP16"), "int8-qdq"),
        ("10.3.0.30", "fp32", 0, (), ("FP16", "GPU_FALLBACK"), "fp32"),
        ("10.13.0.35", "int8", 1, (), ("INT8", "FP16", "GPU_FALLBACK"), "int8-qdq"),
        ("11.1.0.8", "fp32", None, ("STRONGLY_TYPED",), (), "fp32"),
        ("11.1.0.8", "fp16", None, ("STRONGLY_TYPED",), (), "fp16-autocast"),
        ("11.4.1", "int8", 0, ("STRONGLY_TYPED",), ("GPU_FALLBACK",), "int8-qdq"),
    ],
)
def test_build_settings_per_version(version, precision, dla, network, flags, source):
    settings = T.build_settings(version, precision, dla)
    assert settings.network_flags == network and settings.builder_flags == flags and settings.onnx_source == source
    assert T.build_settings(version, precision, dla, version_compatible=True).builder_flags == (*flags, "VERSION_COMPATIBLE")


def test_build_settings_rejects_old_tensorrt_and_unknown_precision():
    with pytest.raises(UserError, match="TensorRT 8.6.1 is too old"):
        T.build_settings("8.6.1", "fp16")
    with pytest.raises(UserError, match="unknown precision"):
        T.build_settings("10.3.0", "bf16")


@needs_no_tensorrt
def test_fp16_on_tensorrt_11_without_modelopt_names_the_converter(tmp_path, monkeypatch):
    # the dev extra installs nvidia-modelopt (QAT): a None in sys.modules makes its import fail here
    for name in ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast"):
        monkeypatch.setitem(sys.modules, name, None)
    run = run_dir_with_onnx(tmp_path)
    with pytest.raises(
        UserError,
        match=r"TensorRT 11 .*ModelOpt AutoCast.*modelopt is not installed: pip install -e '\.\[trt11-fp16\]' in the clone",
    ):
        T.autocast_fp16(run.onnx, tmp_path / "model.fp16-autocast.onnx", SPEC)


# ---- compatibility against recorded manifests ---------------------------------------------------


@pytest.mark.parametrize(
    "name, runtime, ok, text",
    [
        ("h200-trt10.13-int8.json", H200_TRT10, True, ""),
        ("h200-trt10.13-int8.json", {**H200_TRT10, "tensorrt_version": "10.13.0.99"}, True, ""),  # same x.y.z
        (
            "h200-trt10.13-int8.json",
            {**H200_TRT10, "tensorrt_version": "10.14.1"},
            False,
            "built by TensorRT 10.13.0 and this is TensorRT 10.14.1",
        ),
        ("h200-trt10.13-int8.json", {**H200_TRT10, "tensorrt_version": "11.1.0"}, False, "built by TensorRT 10.13.0"),
        ("orin-trt10.3-fp16.json", H200_TRT10, False, "built by TensorRT 10.3.0"),
        (
            "orin-trt10.3-fp16.json",
            {"tensorrt_version": "10.3.0.30", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"},
            False,
            r"built for Orin \(sm87\) and this GPU is NVIDIA H200 \(sm90\)",
        ),
        (
            "orin-trt10.3-int8-dla0.json",
            {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7"},
            True,
            "",
        ),
        (
            "rtx4090-trt10.3-fp32-vc.json",
            {"tensorrt_version": "10.13.0", "gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
            True,
            "",
        ),
        (
            "rtx4090-trt10.3-fp32-vc.json",
            {"tensorrt_version": "11.1.0", "gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
            True,
            "",
        ),
        (
            "rtx4090-trt10.3-fp32-vc.json",
            {"tensorrt_version": "10.2.0", "gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
            False,
            "newer than this TensorRT 10.2.0",
        ),
        (
            "rtx4090-trt10.3-fp32-vc.json",
            {"tensorrt_version": "10.13.0", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"},
            False,
            r"\(sm89\)",
        ),
        ("h200-trt11.1-fp16.json", H200_TRT10, False, "built by TensorRT 11.1.0 and this is TensorRT 10.13.0"),
        ("h200-trt11.1-fp32-vc.json", {**H200_TRT10, "tensorrt_version": "11.4.1"}, True, ""),
    ],
)
def test_compatibility_of_recorded_manifests(name, runtime, ok, text):
    manifest = recorded(name)
    result = E.engine_compatibility(manifest, runtime["tensorrt_version"], runtime["gpu_name"], runtime["compute_capability"])
    assert result.ok is ok
    if ok:
        assert result.host_code is bool(manifest["provenance"]["version_compatible"])
    else:
        assert __import__("re").search(text, result.reason), result.reason
        with pytest.raises(UserError, match=r"cannot run here: .*run `make engine RUN=runs/demo` again .*--rebuild-stale"):
            E.check_engine_compatible(
                manifest,
                runtime["tensorrt_version"],
                runtime["gpu_name"],
                runtime["compute_capability"],
                "runs/demo/engines/x/model.fp16.engine",
            )


def test_recorded_manifests_follow_the_schema():
    from edge.manifest import validate_manifest

    for path in sorted(RECORDED.glob("*.json")):
        manifest = validate_manifest(json.loads(path.read_text()), str(path))
        assert manifest.kind == "engine"
        assert {
            "tensorrt_version",
            "gpu_name",
            "compute_capability",
            "build_flags",
            "profile",
            "version_compatible",
            "dla_core",
        } <= set(manifest.provenance)


def test_same_architecture_other_gpu_runs_with_a_note_and_other_kinds_are_refused():
    manifest = recorded("h200-trt10.13-int8.json")
    result = E.engine_compatibility(manifest, "10.13.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert result.ok and "built on NVIDIA H200, running on NVIDIA H100" in result.notes[0]
    assert not E.engine_compatibility({**manifest, "kind": "onnx"}, "10.13.0", "NVIDIA H200", "9.0").ok
    lacking = {**manifest, "provenance": {"precision": "fp16"}}
    assert "lacks tensorrt_version" in E.engine_compatibility(lacking, "10.13.0", "NVIDIA H200", "9.0").reason


# ---- choosing and refreshing a run's engines ----------------------------------------------------


def test_pick_engine_prefers_this_machine_then_version_compatible(tmp_path):
    run = RunDir(tmp_path / "run")
    orin = fake_engine(run, recorded("orin-trt10.3-fp16.json"))
    int8 = fake_engine(run, recorded("h200-trt10.13-int8.json"))
    fp16_vc = {**recorded("h200-trt11.1-fp32-vc.json")}
    vc = fake_engine(run, fp16_vc)
    assert E.pick_engine(run.engine_files(), H200_TRT10) == int8  # own folder; the 11.1 engine is newer than 10.13
    here_11 = {"tensorrt_version": "11.4.1", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"}
    assert E.pick_engine(run.engine_files(), here_11) == vc  # only the version-compatible one runs on 11.4
    with pytest.raises(
        UserError, match=r"no engine in .*run/engines runs on this machine \(NVIDIA GeForce RTX 4090 sm89.*make engine RUN="
    ):
        E.pick_engine(
            run.engine_files(), {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
        )
    assert orin.exists()


def test_pick_engine_ranks_fp16_first_in_one_folder(tmp_path):
    run = RunDir(tmp_path / "run")
    base = recorded("h200-trt10.13-int8.json")
    paths = {}
    for precision in ("fp32", "int8", "fp16"):
        manifest = json.loads(json.dumps(base))
        manifest["provenance"]["precision"] = precision
        paths[precision] = fake_engine(run, manifest)
    assert E.pick_engine(run.engine_files(), H200_TRT10) == paths["fp16"]
    paths["fp16"].unlink()
    assert E.pick_engine(run.engine_files(), H200_TRT10) == paths["int8"]


def test_stale_precisions_finds_changed_parents_and_foreign_engines(tmp_path):
    run = run_dir_with_onnx(tmp_path, int8=True)
    own = fake_engine(run, recorded("h200-trt10.13-int8.json"), parent=run.int8_trt)
    assert T.stale_precisions(run, H200_TRT10) == []
    fake_engine(run, recorded("orin-trt10.3-fp16.json"), parent=run.onnx)  # fp16 exists only for Orin
    assert T.stale_precisions(run, H200_TRT10) == ["fp16"]
    tiny_onnx(run.int8_trt, seed=1)  # the QDQ parent changed: the int8 engine is stale
    assert T.stale_precisions(run, H200_TRT10) == ["fp16", "int8"]
    assert read_manifest(own).parent_file == "model.int8-trt.onnx"
    run.onnx.unlink()  # no parent, nothing to rebuild from
    assert T.stale_precisions(run, H200_TRT10) == ["int8"]


def test_rebuilding_an_engine_keeps_the_previous_one_in_history(tmp_path, monkeypatch):
    # issue 25: nothing is replaced without a copy; the build itself is faked (no TensorRT here)
    run = run_dir_with_onnx(tmp_path, int8=True, accepted=True)
    old = fake_engine(run, recorded("h200-trt10.13-int8.json"), parent=run.int8_trt)
    before = {p.name: p.read_bytes() for p in (old, old.with_name(old.name + ".json"))}
    monkeypatch.setattr(T, "build_serialized", lambda *args: (b"the new plan", {"input": "input"}))
    request = T.BuildRequest(run, ("int8",), (1, 8, 32), 2.0, None, None, False, False)
    row = T._build_one(None, request, "int8", {**H200_TRT10, "hostname": "test"})
    assert Path(row["engine"]) == old and old.read_bytes() == b"the new plan"
    (kept,) = list((run.root / "history").iterdir())
    for name, data in before.items():  # same relative path: history/<time>/engines/<machine>/
        assert (kept / old.relative_to(run.root).parent / name).read_bytes() == data, name
    assert run.engine_files() == [old]  # the kept one is not an engine of the run


# ---- TensorRT API names per version branch ------------------------------------------------------

_MODULE_NAMES = {"trt", "trt_module"}


def _api_names(version: str) -> set[str]:
    lines = (DATA / f"tensorrt_api_{version}.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _typed_names(scope: ast.AST, only_self: bool = False) -> dict[str, str]:
    """Names (``x`` or ``self.x``) annotated with a TensorRT class inside ``scope``."""
    typed: dict[str, str] = {}
    for node in ast.walk(scope):
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.AnnAssign):
            pairs = [(node.target, node.annotation)]
        elif isinstance(node, ast.arg) and node.annotation is not None:
            pairs = [(ast.Name(id=node.arg), node.annotation)]
        for target, annotation in pairs:
            cls = next((c[1] for c in map(_chain, ast.walk(annotation)) if c and c[0] == "trt" and len(c) == 2), None)
            key = ".".join(_chain(target) or [])
            if cls and key and (key.startswith("self.") or not only_self):
                typed[key] = cls
    return typed


def tensorrt_names_used(source: str) -> set[str]:
    """Every TensorRT name a module touches statically: ``trt_module.X.Y`` / ``self._trt.X``
    chains, and ``var.member`` where ``var`` is annotated with a TensorRT class in the same
    function (or is a ``self.`` attribute annotated anywhere)."""
    tree = ast.parse(source)
    attributes = _typed_names(tree, only_self=True)
    used = set()
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope in scopes:
        typed = {**attributes, **_typed_names(scope)}
        inner = {
            id(n) for n in ast.walk(scope) if isinstance(n, ast.Attribute) for n in [n.value] if isinstance(n, ast.Attribute)
        }
        for node in ast.walk(scope):
            if not isinstance(node, ast.Attribute) or id(node) in inner:
                continue
            chain = _chain(node)
            if not chain:
                continue
            if chain[:2] == ["self", "_trt"]:
                chain = ["trt", *chain[2:]]
            if chain[0] in _MODULE_NAMES and len(chain) >= 2:
                used.add(".".join(chain[1:3]))
                continue
            for split in range(len(chain) - 1, 0, -1):
                owner = ".".join(chain[:split])
                if owner in typed:
                    used.add(f"{typed[owner]}.{chain[split]}")
                    break
    return used


def test_every_tensorrt_name_exists_in_each_supported_version():
    used: set[str] = set()
    for source in TENSORRT_SOURCES:
        used |= tensorrt_names_used((ROOT / source).read_text())
    # The static names are shared by both branches; sanity-check that the scan sees the core API.
    assert {
        "IExecutionContext.execute_async_v3",
        "IExecutionContext.set_tensor_address",
        "Runtime.engine_host_code_allowed",
        "IBuilderConfig.set_timing_cache",
        "TensorIOMode.INPUT",
        "Builder.build_serialized_network",
    } <= used
    for version, probe in (("10.3", "10.3.0.30"), ("11.x", "11.1.0.8")):
        names = _api_names(version)
        missing = sorted(n for n in used if n not in names)
        assert not missing, f"the TensorRT code uses names TensorRT {version} lacks: {missing}"
        # The version branch is data: the flag names build_settings picks must exist in that version.
        for precision in T.PRECISIONS:
            for dla in (None, 0):
                settings = T.build_settings(probe, precision, dla, version_compatible=True)
                branch = {f"BuilderFlag.{f}" for f in settings.builder_flags} | {
                    f"NetworkDefinitionCreationFlag.{f}" for f in settings.network_flags
                }
                assert branch <= names, f"TensorRT {version} {precision}: {sorted(branch - names)}"


def test_name_lists_encode_the_10_to_11_removals():
    v10, v11 = _api_names("10.3"), _api_names("11.x")
    assert {"BuilderFlag.FP16", "BuilderFlag.INT8", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"} <= v10
    assert (
        not {
            "BuilderFlag.FP16",
            "BuilderFlag.INT8",
            "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
            "Builder.platform_has_fast_fp16",
        }
        & v11
    )
    assert "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY" not in v10  # from 10.9 only
    bad = "def f(builder: trt.Builder):\n    builder.platform_has_fast_fp16\n    trt_module.BuilderFlag.FP16\n"
    assert tensorrt_names_used(bad) == {"Builder", "Builder.platform_has_fast_fp16", "BuilderFlag.FP16"}  # the scan catches both


# ---- mypy against tensorrt-stubs ---------------------------------------------------------------

MYPY_CONFIG = """
[mypy]
python_version = 3.11
mypy_path = {typings}
ignore_missing_imports = True
check_untyped_defs = True

[mypy-tensorrt_bindings.*]
ignore_errors = True

[mypy-tensorrt]
ignore_errors = True

[mypy-tensorrt.*]
ignore_errors = True

[mypy-tensorrt_libs]
ignore_missing_imports = True

# Only the TensorRT stubs matter here: numpy, onnx and rich are checked by `make typecheck`.
[mypy-numpy,numpy.*,rich.*,onnx,onnx.*]
follow_imports = skip
"""


@pytest.mark.slow
def test_mypy_flags_a_misspelt_tensorrt_method_and_passes_edge_tensorrt(tmp_path):
    typings = ROOT / "typings"
    if not (typings / "tensorrt_bindings" / "tensorrt.pyi").exists():
        pytest.skip("./typings is absent: run `make typings` (installs tensorrt-stubs) first")
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed in this environment (dev extra)")
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG.format(typings=typings))
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "import tensorrt as trt\n\n"
        "def run(ctx: trt.IExecutionContext, stream: int) -> None:\n"
        "    ctx.execute_async_v3(stream)\n"
        "    ctx.execute_asnyc_v3(stream)\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "mypy"),
            "--config-file",
            str(config),
            "--follow-imports=silent",
            str(snippet),
            *TENSORRT_SOURCES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert any("snippet.py:5" in e and '"IExecutionContext" has no attribute "execute_asnyc_v3"' in e for e in errors), (
        result.stdout
    )
    assert len(errors) == 1, result.stdout  # nothing in the TensorRT code, nothing for the correct call


# ---- CUDA buffer/stream code and the torch CUDA runner (gpu) ------------------------------------


@pytest.mark.gpu
def test_device_io_round_trip_reuses_aligned_buffers_and_times_on_its_stream():
    import torch

    cuda = cuda_io.TorchCuda()
    assert cuda.stream_handle != torch.cuda.default_stream().cuda_stream

    holder: list = []

    def enqueue(_handle: int) -> None:
        slot = holder[0]
        with torch.cuda.stream(cuda.stream):
            slot.device_out["y"].copy_(slot.device_in.sum(dim=(2, 3)) * 2)

    def bind(slot) -> None:
        holder[:] = [slot]

    io = cuda_io.DeviceIO(cuda, "float32", lambda n: {"y": (n, 3)}, {"y": "float32"})
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    y, ms = io.run(x, bind, enqueue)
    np.testing.assert_allclose(y, x.sum(axis=(2, 3)) * 2, rtol=1e-4, atol=1e-3)
    assert ms > 0 and y.dtype == np.float32
    first = io.slots[4]
    addresses = (cuda.address(first.device_in), cuda.address(first.device_out["y"]))
    assert all(a % 256 == 0 for a in addresses)
    y2, _ = io.run(x + 1, bind, enqueue)
    assert io.slots[4] is first and (cuda.address(first.device_in), cuda.address(first.device_out["y"])) == addresses
    np.testing.assert_allclose(y2, (x + 1).sum(axis=(2, 3)) * 2, rtol=1e-4, atol=1e-3)
    y3, _ = io.run(x[:1], bind, enqueue)
    assert set(io.slots) == {1, 4} and y3.shape == (1, 3)
    assert not np.shares_memory(y, y2)  # results are copies, not views of reused buffers


@pytest.mark.gpu
def test_device_io_cuda_graph_replays_the_same_result():
    import torch

    cuda = cuda_io.TorchCuda()
    weight = torch.randn(3, 3, device="cuda")
    holder: list = []

    def enqueue(_handle: int) -> None:
        slot = holder[0]
        with torch.cuda.stream(cuda.stream):
            torch.matmul(slot.device_in.mean(dim=(2, 3)), weight, out=slot.device_out["y"])

    plain = cuda_io.DeviceIO(cuda, "float32", lambda n: {"y": (n, 3)}, {"y": "float32"})
    graphed = cuda_io.DeviceIO(cuda, "float32", lambda n: {"y": (n, 3)}, {"y": "float32"}, use_graphs=True)
    x = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    expected, _ = plain.run(x, lambda s: holder.__setitem__(slice(None), [s]), enqueue)
    for shift in (0.0, 1.0):  # replays read the new input through the captured addresses
        got, ms = graphed.run(x + shift, lambda s: holder.__setitem__(slice(None), [s]), enqueue)
        ref, _ = plain.run(x + shift, lambda s: holder.__setitem__(slice(None), [s]), enqueue)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert graphed.slots[8].graph is not None, graphed.graph_failures
    np.testing.assert_allclose(expected, plain.run(x, lambda s: holder.__setitem__(slice(None), [s]), enqueue)[0])


@pytest.mark.gpu
def test_torch_runner_on_cuda_matches_cpu_and_reports_device_time():
    import torch

    from edge.runners.torch_runner import TorchRunner

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    )
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    with TorchRunner("in-memory", SPEC, device="cpu", model=model) as cpu:
        expected = cpu.infer(x)
        assert cpu.last_device_ms is None
    with TorchRunner("in-memory", SPEC, device="cuda", model=model) as gpu:
        got = gpu.infer(x)
        assert gpu.last_device_ms is not None and gpu.last_device_ms > 0
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    assert got.dtype == np.float32 and got.shape == (5, 3)


# ---- real builds and runs (tensorrt) --------------------------------------------------------------


def _build(run: RunDir, precision: str, **kwargs) -> Path:
    request = T.validate_request(run.root, precision, "1:4:8", 1.0, **kwargs)
    (row,) = T.build_engines(request)
    return Path(row["engine"])


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    with select_runner(path, device="cpu", backend="onnxruntime") as runner:
        return runner.infer(x)


@pytest.mark.tensorrt
@pytest.mark.slow
def test_fp32_engine_builds_runs_and_matches_onnxruntime(tmp_path):
    run = run_dir_with_onnx(tmp_path)
    engine = _build(run, "fp32")
    env = E.runtime_environment()
    assert engine == run.engine_file(env["gpu_name"], env["compute_capability"], env["tensorrt_version"], "fp32")
    manifest = read_manifest(engine)
    assert manifest.kind == "engine" and manifest.parent_file == "model.onnx"
    assert manifest.provenance["tensorrt_version"] == env["tensorrt_version"] and manifest.provenance["profile"]["max"] == 8
    assert (engine.parent / TIMING_CACHE).stat().st_size > 0
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    expected = _ort(run.onnx, x)
    for graphs in (False, True):
        with select_runner(run.root, device="cuda", backend="tensorrt", cuda_graphs=graphs) as runner:
            assert runner.max_batch == 8
            for n in (8, 1, 8):
                got = runner.infer(x[:n])
                np.testing.assert_allclose(got, expected[:n], rtol=1e-3, atol=1e-3)
                assert runner.last_device_ms is not None and runner.last_device_ms > 0
            with pytest.raises(UserError, match="exceeds this artifact's maximum batch 8"):
                runner.infer(np.zeros((9, 3, 16, 16), np.float32))


@pytest.mark.tensorrt
@pytest.mark.slow
def test_fp16_and_int8_engines_keep_top1(tmp_path):
    run = run_dir_with_onnx(tmp_path, int8=True)
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    expected = _ort(run.onnx, x)
    major = trt_version_tuple(E.runtime_environment()["tensorrt_version"])[0]
    precisions = ["int8"] + (["fp16"] if major < 11 or __import__("importlib").util.find_spec("modelopt") else [])
    for precision in precisions:
        engine = _build(run, precision)
        with select_runner(engine, device="cuda") as runner:
            got = runner.infer(x)
        assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.75, precision


@pytest.mark.tensorrt
@pytest.mark.slow
def test_forced_int8_engine_is_marked_not_accepted(tmp_path):
    run = run_dir_with_onnx(tmp_path, int8=True, accepted=False)
    engine = _build(run, "int8", force=True)
    metrics = read_manifest(engine).metrics
    assert metrics["accepted"] is False
    assert metrics["reason"] == f"built with --force from model.int8-trt.onnx, not accepted: {UNACCEPTED}"
    assert "accepted" not in read_manifest(_build(run, "fp32")).metrics


@pytest.mark.tensorrt
def test_engine_from_another_tensorrt_is_refused_with_the_rebuild_command(tmp_path):
    run = run_dir_with_onnx(tmp_path)
    engine = _build(run, "fp32")
    manifest = json.loads((engine.parent / (engine.name + ".json")).read_text())
    manifest["provenance"]["tensorrt_version"] = "9.0.0"
    (engine.parent / (engine.name + ".json")).write_text(json.dumps(manifest))
    with (
        pytest.raises(UserError, match=r"built by TensorRT 9.0.0 .*make engine RUN="),
        TensorRTRunner(engine, artifact_spec(engine)),
    ):
        pass


def test_engine_command_arguments_round_trip():
    from edge.tensorrt import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "runs/demo",
            "--precision",
            "int8",
            "--batch",
            "1:8:32",
            "--workspace",
            "4",
            "--dla",
            "0",
            "--timing-cache",
            "t.cache",
            "--version-compatible",
            "--rebuild-stale",
            "--force",
        ]
    )
    assert (args.precision, args.batch, args.workspace, args.dla, args.timing_cache) == ("int8", "1:8:32", 4.0, 0, "t.cache")
    assert args.version_compatible and args.rebuild_stale and args.force
    assert parser.parse_args(["runs/demo", "--precision", "int8"]).force is False
