"""edge/verify.py: a file that no longer matches its manifest is refused with the command that remakes it."""

import numpy as np
import pytest

from edge.errors import UserError
from edge.manifest import write_manifest
from edge.verify import verify_file


def test_verify_file_detects_a_changed_artifact(artifact):
    _, child = artifact
    child.write_bytes(b"tampered")
    with pytest.raises(UserError, match="does not match its manifest"):
        verify_file(child)


def test_a_reader_refuses_a_file_that_no_longer_matches_its_manifest(tmp_path):
    """select_runner (bench workers, camera, selftest) checks the pair once per file and process."""
    from edge.runners import select_runner
    from tests.edge.tensorrt.test_build import SPEC, tiny_onnx

    run = tmp_path / "run"
    run.mkdir()
    model = tiny_onnx(run / "model.onnx")
    write_manifest(model, "onnx", SPEC, environment={"hostname": "t"})
    with select_runner(model, "cpu") as runner:
        assert runner.infer(np.zeros((1, *SPEC.input_shape), np.float32)).shape == (1, len(SPEC.labels))
    model.write_bytes(model.read_bytes()[:-20])  # cut short after its manifest was written
    with pytest.raises(UserError, match=rf"model.onnx does not match its manifest model.onnx.json .* `edge export {run}`"):
        select_runner(run, "cpu")
    bare = tiny_onnx(tmp_path / "bare.onnx")  # a user's own model without a manifest: nothing to check
    with select_runner(bare, "cpu") as runner:
        assert runner.infer(np.zeros((2, *SPEC.input_shape), np.float32)).shape == (2, len(SPEC.labels))
