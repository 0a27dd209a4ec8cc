"""Staleness down the manifest chain on a real run: a copy whose checkpoint.pt was replaced by a
different one (re-saved with one weight changed, as another training run would write it) makes
model.onnx stale and, through it, model.int8-cpu.onnx; `edge inspect` and stale_reason say so."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from edge.inspect import staleness
from edge.lineage import lineage, stale_link, stale_reason
from edge.manifest import read_manifest, write_manifest

pytest.importorskip("torch", reason="replacing the checkpoint re-saves it with torch (pip install -e '.[train]')")


@pytest.fixture
def run_copy(pretrained_int8_run: Path, tmp_path: Path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(pretrained_int8_run, root)
    return root


def replace_checkpoint(run: Path) -> None:
    """Write a different checkpoint.pt and its manifest, as a new training run into RUN would."""
    import torch

    from train.checkpoint import model_from_checkpoint, save_checkpoint

    old = read_manifest(run / "checkpoint.pt")
    model, spec = model_from_checkpoint(run / "checkpoint.pt")
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    save_checkpoint(run / "checkpoint.pt", model, old.provenance["arch"], spec)
    write_manifest(run / "checkpoint.pt", "checkpoint", spec, provenance={**old.provenance, "trained": True})


def test_a_copied_run_is_current(run_copy):
    int8 = run_copy / "model.int8-cpu.onnx"
    assert lineage(int8) == [int8, run_copy / "model.onnx", run_copy / "checkpoint.pt"]
    assert [staleness(run_copy / n) for n in ("checkpoint.pt", "model.onnx", "model.int8-cpu.onnx")] == [
        "[green]current[/green]"
    ] * 3
    assert stale_reason(int8) is None


def test_a_replaced_checkpoint_makes_the_whole_chain_below_it_stale(run_copy, capsys):
    from edge.cli import main

    recorded = read_manifest(run_copy / "model.onnx").parent_sha256
    replace_checkpoint(run_copy)
    now = read_manifest(run_copy / "checkpoint.pt").sha256
    assert now != recorded
    assert staleness(run_copy / "checkpoint.pt") == "[green]current[/green]"
    assert staleness(run_copy / "model.onnx") == "[red]stale[/red]"
    assert staleness(run_copy / "model.int8-cpu.onnx") == "[red]stale via model.onnx[/red]"
    link = stale_link(run_copy / "model.int8-cpu.onnx")
    assert link is not None and (link.artifact, link.parent) == (run_copy / "model.onnx", run_copy / "checkpoint.pt")
    assert (link.recorded, link.current) == (recorded, now)
    expected = (
        f"model.onnx was exported from a different checkpoint.pt (sha256 {recorded[:12]}.. recorded, {now[:12]}.. now): "
        f"re-run `edge export {run_copy}`"
    )
    assert stale_reason(run_copy / "model.onnx") == expected
    assert stale_reason(run_copy / "model.int8-cpu.onnx") == f"{expected}, then `edge quantize {run_copy} --target cpu`"
    assert stale_reason(run_copy / "checkpoint.pt") is None

    assert main(["inspect", str(run_copy)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("stale ")]
    assert lines == [
        f"stale model.onnx: {expected}",
        f"stale model.int8-cpu.onnx: {expected}, then `edge quantize {run_copy} --target cpu`",
    ]


def test_a_deployed_copy_without_its_parents_is_not_stale(run_copy, tmp_path):
    """A bundle on a device holds the INT8 model and its manifest only: parent absent, not stale."""
    replace_checkpoint(run_copy)
    device = tmp_path / "device"
    device.mkdir()
    for name in ("model.int8-cpu.onnx", "model.int8-cpu.onnx.json"):
        shutil.copy(run_copy / name, device / name)
    assert stale_reason(device / "model.int8-cpu.onnx") is None
    assert staleness(device / "model.int8-cpu.onnx") == "parent absent"
    assert re.search(r"stale via model\.onnx", staleness(run_copy / "model.int8-cpu.onnx"))
