"""The README.md of a generated Triton model repository: how to serve it, and what a client must do
to an image before sending it (the run's preprocessing spec), with a minimal ``tritonclient`` client."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.spec import PreprocessSpec
from edge.triton.models import ModelPlan, Options

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the server PyPI's nvidia-pytriton 0.7 bundles


def _models_table(plans: list[ModelPlan]) -> str:
    lines = ["| model | platform | device | max batch | preferred batch sizes (from) |", "|---|---|---|---|---|"]
    for plan in plans:
        archs = f" (sm {', '.join(plan.cc_model_filenames)})" if plan.cc_model_filenames else ""
        accel = f", ORT TensorRT {plan.accelerator_precision}" if plan.accelerator_precision else ""
        preferred = ", ".join(map(str, plan.preferred)) or "none"
        lines.append(
            f"| `{plan.name}` | {plan.platform}{archs} | {plan.device}{accel} | {plan.max_batch_size} | "
            f"{preferred} ({plan.preferred_source}) |"
        )
    return "\n".join(lines)


class _FlagRecorder:
    """Stands in for cv2 in :meth:`PreprocessSpec.resize`: each ``INTER_*`` constant is its own name
    and ``resize`` records the one it was given, so the README names the interpolation that
    ``spec.apply`` really uses (it is not the spec's ``interpolation`` field when shrinking)."""

    def __init__(self) -> None:
        self.flag = ""

    def __getattr__(self, name: str) -> str:
        if name.startswith("INTER_"):
            return name
        raise AttributeError(name)

    def resize(self, image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
        self.flag = interpolation
        return image


def resize_flags(spec: PreprocessSpec) -> tuple[str, str]:
    """(shrinking, enlarging): the OpenCV interpolation ``spec.apply`` resizes with each way."""
    flags = []
    for side in (4, 1):  # a 4x4 image made 2x2, then a 1x1 image made 2x2
        recorder = _FlagRecorder()
        spec.resize(recorder, np.zeros((side, side), dtype=np.uint8), 2, 2)
        flags.append(recorder.flag)
    return flags[0], flags[1]


def _interpolation_text(spec: PreprocessSpec) -> str:
    shrinking, enlarging = resize_flags(spec)
    if shrinking == enlarging:
        return f"OpenCV `{shrinking}`"
    return f"OpenCV `{shrinking}` when the image shrinks on both sides, `{enlarging}` otherwise"


def _spec_lines(spec: PreprocessSpec) -> str:
    how = _interpolation_text(spec)
    crop = (
        f"resize the shorter side to {spec.resize_size} px ({how}), crop the central {spec.input_size}x{spec.input_size}"
        if spec.crop == "center"
        else f"resize the whole image to {spec.input_size}x{spec.input_size} ({how}; aspect ratio not kept)"
    )
    color = "convert to gray and replicate it to 3 channels" if spec.color == "gray" else "keep the color image"
    return "\n".join(
        [
            f"1. decode to {spec.channel_order.upper()} uint8; {color};",
            f"2. {crop};",
            f"3. scale to [0, 1], subtract mean {list(spec.mean)} and divide by std {list(spec.std)} per channel;",
            f"4. lay out as float32 NCHW, channel order {spec.channel_order.upper()}: shape (N, {', '.join(map(str, spec.input_shape))}).",
        ]
    )


def render_readme(repo: Path, plans: list[ModelPlan], options: Options) -> str:
    first = plans[0]
    io_in, io_out = first.inputs[0], first.outputs[0]
    from edge.triton.pbtxt import schema_available

    gpus = " --gpus all" if any(plan.device == "cuda" for plan in plans) else ""
    checked = (
        "Every `config.pbtxt` was checked against Triton's `ModelConfig` schema"
        if schema_available()
        else "The configs were NOT checked against Triton's schema (tritonclient is not installed: pip install -e '.[triton]')"
    )
    return f"""# Triton model repository

Written by `edge triton` from the run's artifacts. {checked}; the preprocessing spec is also in each config as the parameter `edge_preprocess_spec`.

{_models_table(plans)}

## Serve it

    tritonserver --model-repository={repo.resolve()}
    # or in NVIDIA's container:
    docker run --rm{gpus} -p8000:8000 -p8001:8001 -p8002:8002 -v {repo.resolve()}:/models {TRITON_IMAGE} \\
        tritonserver --model-repository=/models

HTTP on 8000, gRPC on 8001, Prometheus metrics on 8002 (`/metrics`). TensorRT plans load only on a
GPU whose compute capability is listed in `cc_model_filenames` and under the TensorRT version that
built them. On Kubernetes, KServe's Triton serving runtime takes this folder as the `storageUri` of an
`InferenceService` with `modelFormat: triton`.

## Client-side preprocessing (the run's spec)

{_spec_lines(first.spec)}

`edge.spec` does exactly this (`spec.apply(frame_bgr_uint8)`), so a client needs no numbers of its own:

```python
import json

import cv2, numpy as np, tritonclient.http as triton
from edge.spec import PreprocessSpec

client = triton.InferenceServerClient("localhost:8000")
config = client.get_model_config("{first.name}")  # the spec travels in the model's config
spec = PreprocessSpec.from_dict(json.loads(config["parameters"]["edge_preprocess_spec"]["string_value"]))
batch = np.stack([spec.apply(cv2.imread("image.jpg"))])  # float32 (1, {", ".join(map(str, io_in.dims))})
request = triton.InferInput("{io_in.name}", batch.shape, "FP32")
request.set_data_from_numpy(batch)
result = client.infer("{first.name}", [request], outputs=[triton.InferRequestedOutput("{io_out.name}", class_count=3)])
print(result.as_numpy("{io_out.name}"))  # top-3 as b"score:index:label" (Triton's classification extension)
```
"""
