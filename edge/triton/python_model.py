"""The Python-backend model that ``edge serve`` gives Triton: one ONNX Runtime session over the artifact.

This file is copied into the served repository as ``1/model.py`` and runs inside Triton's Python
backend stub (the system Python that the stub links, not this project's venv), so it imports
nothing from ``edge``. ``SITE_PACKAGES`` is filled in when the file is copied: the venv's
site-packages, where numpy and onnxruntime are.

Tensors cross the stub through DLPack, not ``pb_utils.Tensor(name, array)``: the stub's pybind11
reads numpy 2 arrays' descriptors with numpy 1's layout and sends empty outputs. The stub renames
an output's capsule in a way numpy's capsule destructor does not expect, so numpy reports an
"unraisable" ValueError for every response although the tensor is sent intact and freed (checked:
logits identical to a local session, no memory growth over 900 batch-32 requests);
``_quiet_capsule_names`` keeps that one message out of the server log.
"""

import json
import sys

SITE_PACKAGES: list = []  # filled in by edge.triton.serve
sys.path[:0] = [p for p in SITE_PACKAGES if p not in sys.path]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

_default_unraisable_hook = sys.unraisablehook


def _quiet_capsule_names(unraisable):
    if not (isinstance(unraisable.exc_value, ValueError) and "PyCapsule_GetPointer" in str(unraisable.exc_value)):
        _default_unraisable_hook(unraisable)


sys.unraisablehook = _quiet_capsule_names


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        threads = int(parameters.get("intra_op_threads", "0"))
        if threads:
            options.intra_op_num_threads = threads
        onnx_path = f"{args['model_repository']}/{args['model_version']}/model.onnx"
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        # The dynamic batcher hands over several requests at once: one session run for all of them.
        inputs = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name)) for r in requests]
        logits = self.session.run([self.output_name], {self.input_name: np.concatenate(inputs)})[0]
        responses, start = [], 0
        for batch in inputs:
            part = np.ascontiguousarray(logits[start : start + len(batch)], dtype=np.float32)
            start += len(batch)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(self.output_name, part)]))
        return responses
