"""The generated repository README tells a client to preprocess exactly as ``spec.apply`` does: the
interpolation it names is the one OpenCV is really given, not the spec's field read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.spec import PreprocessSpec
from edge.triton.models import ModelPlan, Options, TensorIO
from edge.triton.readme import render_readme, resize_flags


def plan(spec: PreprocessSpec) -> ModelPlan:
    return ModelPlan(
        name="m-onnx-fp32",
        artifact="onnx-fp32",
        platform="onnxruntime_onnx",
        inputs=[TensorIO("input", "TYPE_FP32", spec.input_shape)],
        outputs=[TensorIO("logits", "TYPE_FP32", (len(spec.labels),))],
        max_batch_size=32,
        spec=spec,
        files={},
        device="cpu",
    )


def interpolations_used(spec: PreprocessSpec, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """The cv2 interpolation names ``spec.apply`` passes to ``cv2.resize``, for a frame larger than the
    spec on both sides ("shrinking") and one smaller ("enlarging")."""
    cv2 = pytest.importorskip("cv2")
    names = {getattr(cv2, n): n for n in ("INTER_NEAREST", "INTER_LINEAR", "INTER_CUBIC", "INTER_AREA", "INTER_LANCZOS4")}
    real_resize, seen = cv2.resize, set()

    def spy(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
        seen.add(names[interpolation])
        return real_resize(image, size, interpolation=interpolation)

    monkeypatch.setattr(cv2, "resize", spy)
    used = {}
    for case, shape in (("shrinking", (480, 640, 3)), ("enlarging", (40, 60, 3))):
        seen.clear()
        spec.apply(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
        used[case] = set(seen)
    return used


@pytest.mark.parametrize("crop", ["center", "resize"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "area"])
def test_readme_names_the_interpolation_spec_apply_uses(
    crop: str, interpolation: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = PreprocessSpec(224, 256, crop=crop, interpolation=interpolation, labels=("a", "b"))
    used = interpolations_used(spec, monkeypatch)
    assert used["shrinking"] == {"INTER_AREA"}  # antialiased, as PIL on the training side
    assert resize_flags(spec) == (used["shrinking"].pop(), used["enlarging"].pop())

    readme = render_readme(tmp_path / "repo", [plan(spec)], Options())
    step = next(line for line in readme.splitlines() if line.startswith("2. resize"))
    if interpolation == "area":
        assert "(OpenCV `INTER_AREA`" in step
    else:
        enlarging = {"bicubic": "INTER_CUBIC", "bilinear": "INTER_LINEAR"}[interpolation]
        assert f"OpenCV `INTER_AREA` when the image shrinks on both sides, `{enlarging}` otherwise" in step
    assert f"({interpolation})" not in step and f"({interpolation};" not in step
