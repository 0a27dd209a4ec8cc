import json

import pytest

from edge.artifacts import (
    MANIFEST_FIELDS,
    atomic_path,
    atomic_write_text,
    environment_fingerprint,
    is_stale,
    manifest_path,
    read_manifest,
    sha256_file,
    update_metrics,
    validate_manifest,
    verify_file,
    write_manifest,
)
from edge.errors import UserError
from edge.spec import PreprocessSpec

SPEC = PreprocessSpec(input_size=32, resize_size=32, crop="resize", labels=["a", "b"])


@pytest.fixture
def artifact(tmp_path):
    parent = tmp_path / "checkpoint.pt"
    parent.write_bytes(b"parent weights")
    write_manifest(parent, "checkpoint", SPEC)
    child = tmp_path / "model.onnx"
    child.write_bytes(b"onnx bytes")
    write_manifest(child, "onnx", SPEC, parent=parent, provenance={"opset": 18}, metrics={"max_abs_diff": 1e-6})
    return parent, child


def test_manifest_records_hashes_spec_and_environment(artifact):
    parent, child = artifact
    manifest = read_manifest(child)
    assert manifest.sha256 == sha256_file(child)
    assert manifest.parent_sha256 == sha256_file(parent)
    assert manifest.parent_file == "checkpoint.pt"
    assert manifest.preprocess_spec == SPEC
    assert manifest.provenance == {"opset": 18}
    env = manifest.environment
    for key in ("cpu_model", "cpu_count", "cpu_flags", "packages", "python", "machine_fingerprint"):
        assert key in env
    assert "numpy" in env["packages"]


def test_schema_fails_on_missing_field(artifact):
    _, child = artifact
    data = json.loads(manifest_path(child).read_text())
    del data["metrics"]
    with pytest.raises(UserError, match=r"missing \['metrics'\]"):
        validate_manifest(data)


def test_schema_fails_on_unknown_field(artifact):
    _, child = artifact
    data = json.loads(manifest_path(child).read_text())
    data["colour"] = "blue"
    with pytest.raises(UserError, match=r"unknown \['colour'\]"):
        validate_manifest(data)


def test_schema_fields_are_exactly_the_documented_set():
    expected = {
        "kind",
        "file",
        "sha256",
        "size_bytes",
        "parent_sha256",
        "parent_file",
        "spec",
        "provenance",
        "metrics",
        "environment",
        "created_at",
        "extra_files",
        "manifest_version",
    }
    assert expected - MANIFEST_FIELDS == set() and MANIFEST_FIELDS - expected == set()


def test_unknown_kind_is_rejected(artifact):
    _, child = artifact
    data = json.loads(manifest_path(child).read_text())
    data["kind"] = "tflite"
    with pytest.raises(UserError, match="unknown artifact kind 'tflite'"):
        validate_manifest(data)


def test_stale_when_parent_changes_and_not_when_parent_absent(artifact):
    parent, child = artifact
    assert is_stale(child, parent) is False
    parent.write_bytes(b"retrained weights")
    write_manifest(parent, "checkpoint", SPEC)
    assert is_stale(child, parent) is True
    parent.unlink()
    assert is_stale(child, parent) is None


def test_update_metrics_merges(artifact):
    _, child = artifact
    update_metrics(child, {"top1": 0.9})
    assert read_manifest(child).metrics == {"max_abs_diff": 1e-6, "top1": 0.9}


def test_verify_file_detects_a_changed_artifact(artifact):
    _, child = artifact
    child.write_bytes(b"tampered")
    with pytest.raises(UserError, match="does not match its manifest"):
        verify_file(child)


def test_missing_manifest_names_the_fix(tmp_path):
    lone = tmp_path / "x.onnx"
    lone.write_bytes(b"")
    with pytest.raises(UserError, match="has no manifest"):
        read_manifest(lone)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_environment_fingerprint_lists_cpu_flags():
    env = environment_fingerprint()
    assert isinstance(env["cpu_flags"], list)
    assert env["cpu_count"] >= 1
    assert len(env["machine_fingerprint"]) == 16
