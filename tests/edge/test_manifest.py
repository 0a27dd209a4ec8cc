"""edge/manifest.py: what a manifest records, its schema, and the user errors for one of the wrong shape."""

import json

import pytest

from edge.atomic import sha256_file
from edge.errors import UserError
from edge.manifest import MANIFEST_FIELDS, manifest_path, read_manifest, update_metrics, validate_manifest
from tests.edge.conftest import SPEC


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


def test_update_metrics_merges(artifact):
    _, child = artifact
    update_metrics(child, {"top1": 0.9})
    assert read_manifest(child).metrics == {"max_abs_diff": 1e-6, "top1": 0.9}


def test_missing_manifest_names_the_fix(tmp_path):
    lone = tmp_path / "x.onnx"
    lone.write_bytes(b"")
    with pytest.raises(UserError, match="has no manifest"):
        read_manifest(lone)


# ---- manifests of the wrong shape are user errors naming the file and the field ---------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("manifest_version", "x", "'manifest_version' must be a whole number, not a string"),
        ("manifest_version", True, "'manifest_version' must be a whole number, not a boolean"),
        ("manifest_version", 0, "manifest version 0 is not a version"),
        ("environment", None, "'environment' must be an object, not null"),
        ("provenance", [], "'provenance' must be an object, not a list"),
        ("metrics", "fast", "'metrics' must be an object, not a string"),
        ("size_bytes", "12", "'size_bytes' must be a whole number, not a string"),
        ("size_bytes", -1, "'size_bytes' is negative"),
        ("sha256", 12, "'sha256' must be a string, not a number"),
        ("kind", None, "'kind' must be a string, not null"),
        ("parent_sha256", 1.5, "'parent_sha256' must be a string or null, not a number"),
        ("created_at", None, "'created_at' must be a string"),
        ("extra_files", ["a"], "'extra_files' must be an object, not a list"),
        ("extra_files", {"a.data": 3}, "'extra_files' must map file names to sha256 strings"),
        ("spec", "16px", "'spec' must be an object or null, not a string"),
        ("spec", {"input_size": "x", "resize_size": 16}, "'spec' is not a valid preprocess spec"),
        ("spec", {"input_size": 16, "resize_size": 16, "labels": 5}, "'spec' is not a valid preprocess spec"),
        ("spec", {"input_size": 16, "resize_size": 16, "mean": "abc"}, "'spec' is not a valid preprocess spec"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_a_user_error(artifact, field, value, message):
    _, child = artifact
    path = manifest_path(child)
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as caught:
        read_manifest(child)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not a readable manifest"),
        (b'{"kind": "onnx", "fi', "is not a readable manifest"),
        (b"\xff\xfe\x00\x81garbage", "is not a readable manifest"),
        (b"[1, 2]", "a manifest must be a JSON object, not a list"),
        (b"null", "a manifest must be a JSON object, not null"),
    ],
)
def test_a_corrupt_manifest_is_a_user_error(artifact, content, message):
    _, child = artifact
    manifest_path(child).write_bytes(content)
    with pytest.raises(UserError) as caught:
        read_manifest(child)
    assert str(manifest_path(child)) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_manifest_that_is_a_directory_is_a_user_error(tmp_path):
    lone = tmp_path / "x.onnx"
    lone.write_bytes(b"")
    manifest_path(lone).mkdir()
    with pytest.raises(UserError, match="cannot read the manifest .*: is a directory"):
        read_manifest(lone)
