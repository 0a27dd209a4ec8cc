"""edge/lineage.py: staleness down the manifest chain, and the line that says what remakes it."""

import pytest

from edge.atomic import sha256_file
from edge.lineage import artifact_parent, is_stale, lineage, stale_link, stale_reason
from edge.manifest import manifest_path, read_manifest, write_manifest
from tests.edge.conftest import SPEC


def test_stale_when_parent_changes_and_not_when_parent_absent(artifact):
    parent, child = artifact
    assert is_stale(child, parent) is False
    parent.write_bytes(b"retrained weights")
    write_manifest(parent, "checkpoint", SPEC)
    assert is_stale(child, parent) is True
    parent.unlink()
    assert is_stale(child, parent) is None


@pytest.fixture
def chain(tmp_path):
    """checkpoint.pt -> model.onnx -> model.int8-trt.onnx -> engines/<machine>/model.int8.engine, as
    the stages write them (any bytes: staleness reads manifests and hashes only)."""
    run = tmp_path / "run"
    run.mkdir()
    files = {
        "checkpoint": (run / "checkpoint.pt", "checkpoint", None, {}),
        "onnx": (run / "model.onnx", "onnx", run / "checkpoint.pt", {}),
        "int8": (run / "model.int8-trt.onnx", "onnx-int8-trt", run / "model.onnx", {}),
        "engine": (
            run / "engines" / "h200-sm90-trt10.13.0" / "model.int8.engine",
            "engine",
            run / "model.int8-trt.onnx",
            {"precision": "int8"},
        ),
    }
    for name, (path, kind, parent, provenance) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{name} v1".encode())
        write_manifest(path, kind, SPEC, parent=parent, provenance=provenance, environment={})
    return {name: entry[0] for name, entry in files.items()}


def retrain(path):
    path.write_bytes(b"another training run")
    write_manifest(path, "checkpoint", SPEC, environment={})


def test_the_parent_is_the_one_the_manifest_records_in_the_run(chain):
    assert artifact_parent(chain["engine"]) == chain["int8"]  # two folders up: engines/<machine>/
    assert artifact_parent(chain["int8"]) == chain["onnx"]
    assert artifact_parent(chain["checkpoint"]) is None
    assert lineage(chain["engine"]) == [chain["engine"], chain["int8"], chain["onnx"], chain["checkpoint"]]


def test_a_current_chain_has_no_stale_link(chain):
    assert all(stale_reason(path) is None for path in chain.values())


def test_staleness_passes_down_the_chain(chain):
    retrain(chain["checkpoint"])
    for name in ("onnx", "int8", "engine"):
        link = stale_link(chain[name])
        assert link is not None and (link.artifact, link.parent) == (chain["onnx"], chain["checkpoint"])
    assert stale_link(chain["checkpoint"]) is None
    assert is_stale(chain["int8"], chain["onnx"]) is False  # one link alone still holds
    run = chain["checkpoint"].parent
    reason = stale_reason(chain["engine"])
    assert reason is not None
    assert reason.startswith("model.onnx was exported from a different checkpoint.pt (sha256 ")
    assert reason.endswith(
        f"re-run `edge export {run}`, then `edge quantize {run} --target trt`, then `edge engine {run} --precision int8`"
    )


def test_the_stale_link_nearest_the_root_is_named(chain):
    """Both the checkpoint and the INT8 model changed: remaking starts at the export."""
    retrain(chain["checkpoint"])
    chain["int8"].write_bytes(b"requantized from elsewhere")
    write_manifest(chain["int8"], "onnx-int8-trt", SPEC, parent=chain["onnx"], environment={})
    link = stale_link(chain["engine"])
    assert link is not None and link.artifact == chain["onnx"]
    chain["checkpoint"].unlink()  # the root gone: only the engine's own link is left to break
    assert stale_link(chain["engine"]).artifact == chain["engine"]


def test_a_parent_replaced_behind_its_own_manifest_makes_the_child_stale(chain):
    recorded = read_manifest(chain["onnx"]).parent_sha256
    chain["checkpoint"].write_bytes(b"copied over, manifest left as it was")
    reason = stale_reason(chain["int8"])
    assert reason is not None and f"sha256 {recorded[:12]}.. recorded, {sha256_file(chain['checkpoint'])[:12]}.. now" in reason


def test_an_absent_parent_or_a_missing_manifest_is_not_stale(chain):
    """A device holding only the engine (and its manifest) cannot judge it: not stale."""
    retrain(chain["checkpoint"])
    chain["onnx"].unlink()
    assert stale_reason(chain["int8"]) is None and stale_reason(chain["engine"]) is None
    assert stale_reason(chain["checkpoint"].parent / "nothing.onnx") is None
    manifest_path(chain["int8"]).unlink()
    assert stale_reason(chain["int8"]) is None and lineage(chain["engine"]) == [chain["engine"], chain["int8"]]
