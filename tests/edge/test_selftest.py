"""`edge selftest --tensorrt` (edge/selftest.py) without a GPU: the runners, the engine build and
(mostly) the quantizer are faked. A missing measurement is null and "n/a"; a run without a
TensorRT-targeted INT8 model is quantized (calibrated on photos it does not evaluate on) and its
INT8 engine built and compared; an INT8 model that cannot be made or was not accepted fails the
selftest with the reason."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.errors import UserError
from edge.manifest import write_manifest
from edge.run import RunDir
from tests.edge.tensorrt.test_build import ENV, SPEC, tiny_onnx
from tests.edge.test_onnxruntime_gpu import _Fake

TRT_ENV = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
NOT_ACCEPTED = (
    "top-1 agreement 87.50% on 24 unlabelled test photos (3 flips) is below --min-agreement 99 beyond "
    "sampling noise (at most 1 flips at 95%)"
)


def fake_int8_trt(root: Path, accepted: bool = True, reason: str | None = None) -> Path:
    """RUN/model.int8-trt.onnx with a manifest like edge quantize's: the verdict and its figures."""
    path = tiny_onnx(root / "model.int8-trt.onnx", seed=1)
    write_manifest(
        path,
        "onnx-int8-trt",
        SPEC,
        parent=root / "model.onnx",
        provenance={
            "calibration": {"path": str(root / "calibration" / "calibration.npy"), "data": "scikit-image photos", "count": 48}
        },
        metrics={
            "accepted": accepted,
            "reason": reason,
            "agreement": 100.0 if accepted else 87.5,
            "eval_count": 24,
            "eval_source": "scikit-image photos:test (seed 0, unlabelled)",
            "simulated": True,
        },
        environment=ENV,
    )
    return path


def _reference() -> np.ndarray:
    logits = np.full((3, 1000), -5.0, np.float32)
    for row, cls in enumerate((281, 967, 812)):  # cat, coffee, rocket
        logits[row, cls] = 5.0
    return logits


class Harness:
    """The fakes of one selftest: runners with fixed logits, a build that records what it built,
    a quantizer that records how it was called and does ``quantize`` (or the real one if None)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_ms: float | None = 0.5):
        import edge.quantize.cli
        import edge.runners
        import edge.tensorrt.build

        self.run = tmp_path / "run"
        tiny_onnx(self.run / "model.onnx")
        self.reference = _reference()
        self.engines = {p: self.reference + 1e-4 for p in ("fp32", "fp16", "int8")}
        self.built: list[str] = []
        self.quantize_calls: list[dict[str, Any]] = []
        self.batches: list[np.ndarray] = []
        self.quantize = lambda root: fake_int8_trt(root)

        def fake_select(artifact, device="cpu", backend="auto", **options):
            path = Path(artifact)
            if path.suffix == ".onnx":
                return _Recording(self.reference, self.batches)
            return _Fake(self.engines[path.name.split(".")[1]], device_ms=device_ms)

        def fake_build(request):
            (precision,) = request.precisions
            self.built.append(precision)
            return [{"engine": str(self.run / "engines" / "m" / f"model.{precision}.engine")}]

        def fake_quantize(root, **kwargs):
            self.quantize_calls.append(kwargs)
            return self.quantize(Path(root))

        monkeypatch.setattr(edge.runners, "select_runner", fake_select)
        monkeypatch.setattr(edge.tensorrt.build, "build_engines", fake_build)
        monkeypatch.setattr(edge.quantize.cli, "quantize_run", fake_quantize)

    def selftest(self) -> dict[str, Any]:
        from edge import selftest

        return selftest.selftest(self.run, None, 3, TRT_ENV)

    def exit_status(self, monkeypatch: pytest.MonkeyPatch) -> int:
        """`edge selftest --tensorrt` through its run(), TensorRT's presence faked."""
        import argparse

        import edge.runners
        import edge.runners.tensorrt_engines
        from edge import selftest

        monkeypatch.setattr(edge.runners, "require_tensorrt", lambda purpose="": None)
        monkeypatch.setattr(edge.runners.tensorrt_engines, "runtime_environment", lambda: dict(TRT_ENV))
        monkeypatch.setenv("COLUMNS", "250")
        return selftest.run(argparse.Namespace(tensorrt=True, run=str(self.run), out=None, iters=2))


class _Recording(_Fake):
    """The ONNX Runtime reference: records the (preprocessed) batch it was given."""

    def __init__(self, logits: np.ndarray, batches: list[np.ndarray]):
        super().__init__(logits)
        self.batches = batches

    def infer(self, batch):
        self.batches.append(np.array(batch))
        return super().infer(batch)


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["precision"]: r for r in report["rows"]}


# ---- (a) a missing measurement is null and n/a ---------------------------------------------------


def test_missing_device_time_is_null_and_shown_as_na(tmp_path, monkeypatch, capsys):
    harness = Harness(tmp_path, monkeypatch, device_ms=None)  # the runner reports no device time
    assert harness.exit_status(monkeypatch) == 0
    written = json.loads((harness.run / "selftest" / "report.json").read_text())
    for row in written["rows"]:
        assert row["status"] == "pass" and row["device_p50_ms"] is None and row["host_p50_ms"] > 0
    markdown = (harness.run / "selftest" / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith(("| fp32 ", "| fp16 ", "| int8 "))]
    assert len(rows) == 3 and all(line.endswith(" | n/a |") for line in rows), markdown  # device p50: n/a, not 0.00
    table = capsys.readouterr().out
    assert table.count("n/a") == 3, table


def test_device_time_p50_is_null_when_any_iteration_went_unmeasured():
    from edge import selftest

    assert selftest._p50([0.5, 0.7, 0.6]) == 0.6
    assert selftest._p50([0.5, math.nan, 0.6]) is None and selftest._p50([math.nan]) is None and selftest._p50([]) is None


# ---- (b) no INT8 model: the selftest quantizes the run for TensorRT --------------------------------


def test_selftest_quantizes_for_tensorrt_then_builds_and_compares_int8(tmp_path, monkeypatch):
    harness = Harness(tmp_path, monkeypatch)
    run = RunDir(harness.run)
    assert not run.int8_trt.exists() and not run.calibration_file.exists()
    report = harness.selftest()
    (call,) = harness.quantize_calls
    assert call["target"] == "trt" and call.get("data") is None  # no labelled data: the photos
    assert call["weight_rounding"] == "nearest"
    assert harness.built == ["fp32", "fp16", "int8"]
    rows = _rows(report)
    assert rows["int8"]["status"] == "pass" and rows["int8"]["engine"].endswith("model.int8.engine")
    assert report["passed"] is True
    assert report["int8_model"]["made_by_selftest"] is True and report["int8_model"]["accepted"] is True
    markdown = (harness.run / "selftest" / "report.md").read_text()
    assert "quantized by this selftest" in markdown and "edge quantize accepted it" in markdown
    assert "; 0 of them in the INT8 model's calibration set." in markdown
    assert report["int8_model"]["photos_in_calibration"] == 0

    # Calibrated on the calibration role of the photos, evaluated on the test role: no image in both.
    from calibration.sets import load_calibration_set
    from edge import selftest

    calib = load_calibration_set(run.calibration_file)
    assert calib.provenance["data"] == "scikit-image photos"
    assert all(item.startswith("photo:calibration:") for item in calib.provenance["items"])
    (evaluated,) = harness.batches
    assert len(evaluated) == 3 and selftest.evaluated_in(calib.tensor, evaluated) == 0

    # The next selftest finds the model and does not quantize again.
    again = harness.selftest()
    assert len(harness.quantize_calls) == 1 and again["int8_model"]["made_by_selftest"] is False
    assert again["int8_model"]["photos_in_calibration"] is None  # not made here: not checked, and says so
    assert "found in the run, its calibration set not checked" in (harness.run / "selftest" / "report.md").read_text()
    assert _rows(again)["int8"]["status"] == "pass"


def test_int8_is_judged_by_naming_the_photos_fp16_by_agreeing_with_onnxruntime(tmp_path, monkeypatch):
    harness = Harness(tmp_path, monkeypatch)
    swapped = harness.reference.copy()
    swapped[0, 285] = 6.0  # the cat as Egyptian cat, not tiger cat: still a cat, but not float's top-1
    harness.engines.update(fp16=swapped, int8=swapped)
    rows = _rows(harness.selftest())
    assert rows["int8"]["status"] == "pass" and rows["int8"]["photos_named"]
    assert rows["int8"]["top1_agreement_vs_ort"] == pytest.approx(200 / 3) and rows["int8"]["top1"]["cat"] == 285
    assert rows["fp16"]["status"] == "fail" and rows["fp16"]["top1_agreement_vs_ort"] == pytest.approx(200 / 3)


def test_evaluation_photos_are_the_test_roles_whole_photos_never_calibrated_on():
    from edge import selftest
    from edge.photos import photo_set, photos

    def digest(image: np.ndarray) -> str:
        return hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()

    evaluated = selftest.evaluation_photos()
    assert list(evaluated) == ["cat", "coffee", "rocket"]
    assert all(np.array_equal(evaluated[n], p) for n, p in photos().items())
    calibration = {digest(image) for image in photo_set(48, 0, role="calibration")}
    assert not calibration & {digest(image) for image in evaluated.values()}


def test_a_stored_calibration_set_holding_the_evaluated_photos_is_not_used(tmp_path, monkeypatch):
    from calibration.sets import load_calibration_set, store_calibration_set
    from edge import selftest

    harness = Harness(tmp_path, monkeypatch)
    run = RunDir(harness.run)
    whole = list(selftest.evaluation_photos().values())
    labels = np.full(len(whole), -1)
    ids = [f"photo:{i}" for i in range(len(whole))]
    # An older photo set (the whole photos first) is drawn again from the calibration role.
    store_calibration_set(run, SPEC, whole, ids, labels, data="scikit-image photos", seed=0, requested=3)
    assert _rows(harness.selftest())["int8"]["status"] == "pass"
    calib = load_calibration_set(run.calibration_file)
    assert selftest.evaluated_in(calib.tensor, harness.batches[-1]) == 0
    assert all(item.startswith("photo:calibration:") for item in calib.provenance["items"])

    # Another data set's calibration holding them is not replaced: the INT8 row fails and says so.
    run.int8_trt.unlink()
    store_calibration_set(run, SPEC, whole, ids, labels, data="my-images", seed=0, requested=3)
    status = _rows(harness.selftest())["int8"]["status"]
    assert status.startswith(f"failed: could not quantize {run.root} for TensorRT: ")
    assert "holds 3 of the photos the selftest evaluates on" in status


# ---- (c) INT8 that cannot be made, or was not accepted, fails the selftest --------------------------


def _fails_to_quantize(root: Path) -> Path:
    raise UserError("no calibration for you")


def _breaks_qdq_rules(root: Path) -> Path:
    raise RuntimeError("target-trt model breaks TensorRT's Q/DQ rules: ['Add_3']")


def _not_accepted(root: Path) -> Path:
    return fake_int8_trt(root, accepted=False, reason=NOT_ACCEPTED)


@pytest.mark.parametrize(
    ("quantize", "reason"),
    [
        (_fails_to_quantize, "could not quantize {root} for TensorRT: no calibration for you"),
        (_breaks_qdq_rules, "could not quantize {root} for TensorRT: target-trt model breaks TensorRT's Q/DQ rules"),
        (_not_accepted, f"model.int8-trt.onnx was not accepted by edge quantize: {NOT_ACCEPTED}; requantize it"),
    ],
    ids=["quantize-error", "qdq-rules", "not-accepted"],
)
def test_int8_not_made_or_not_accepted_fails_with_the_reason(tmp_path, monkeypatch, capsys, quantize, reason):
    harness = Harness(tmp_path, monkeypatch)
    harness.quantize = quantize
    assert harness.exit_status(monkeypatch) == 1
    reason = reason.format(root=harness.run)
    (call,) = harness.quantize_calls
    assert call["target"] == "trt"
    assert harness.built == ["fp32", "fp16"]  # no INT8 engine from a model that is missing or not accepted
    report = json.loads((harness.run / "selftest" / "report.json").read_text())
    int8 = _rows(report)["int8"]
    assert report["passed"] is False and _rows(report)["fp32"]["status"] == "pass"
    assert int8["status"].startswith(f"failed: {reason}"), int8["status"]
    assert all(int8[k] is None for k in ("max_abs_diff_vs_ort", "top1_agreement_vs_ort", "host_p50_ms", "device_p50_ms"))
    markdown = (harness.run / "selftest" / "report.md").read_text()
    assert "# TensorRT self-test: FAIL" in markdown
    assert f"| int8 | failed: {reason}" in markdown and "| n/a | n/a | n/a | n/a | n/a |" in markdown
    captured = capsys.readouterr()
    assert captured.err.startswith(f"edge selftest: FAIL: int8: failed: {reason}")
    assert captured.err.count("\n") == 1


def test_an_int8_model_found_not_accepted_is_not_built(tmp_path, monkeypatch):
    harness = Harness(tmp_path, monkeypatch)
    _not_accepted(harness.run)
    report = harness.selftest()
    assert harness.quantize_calls == [] and harness.built == ["fp32", "fp16"]
    assert report["passed"] is False and report["int8_model"]["made_by_selftest"] is False
    assert _rows(report)["int8"]["status"].startswith("failed: model.int8-trt.onnx was not accepted by edge quantize")
    assert "edge quantize did NOT accept it" in (harness.run / "selftest" / "report.md").read_text()
