"""The checkpoint -> ONNX pair with manifests that the tests of manifests, verification and lineage share."""

import pytest

from edge.manifest import write_manifest
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
