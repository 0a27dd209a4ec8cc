"""The run directory: one pipeline's artifacts under ``runs/<name>/``.

Every stage takes a run directory and finds its inputs here; explicit paths override.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError

CHECKPOINT = "checkpoint.pt"
ONNX_FP32 = "model.onnx"
ONNX_INT8_CPU = "model.int8-cpu.onnx"
ONNX_INT8_TRT = "model.int8-trt.onnx"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str], must_exist: bool = True) -> "RunDir":
        root = Path(path)
        if must_exist and not root.is_dir():
            raise UserError(f"run directory {root} does not exist: create it with `edge pretrained` or `edge train`")
        return cls(root)

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def onnx(self) -> Path:
        return self.root / ONNX_FP32

    @property
    def int8_cpu(self) -> Path:
        return self.root / ONNX_INT8_CPU

    @property
    def int8_trt(self) -> Path:
        return self.root / ONNX_INT8_TRT

    @property
    def engines(self) -> Path:
        return self.root / "engines"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def require(self, path: Path, how: str) -> Path:
        """``path`` if it exists, else a UserError that names the command that makes it."""
        if not path.exists():
            raise UserError(f"{path} does not exist: {how}")
        return path

    def engine_files(self) -> list[Path]:
        return sorted(self.engines.glob("*/*.engine")) if self.engines.is_dir() else []

    def artifacts(self) -> dict[str, Path]:
        """The deployable artifacts present, by bench name."""
        found: dict[str, Path] = {}
        for name, path in (
            ("torch-fp32", self.checkpoint),
            ("onnx-fp32", self.onnx),
            ("int8-cpu", self.int8_cpu),
            ("int8-trt", self.int8_trt),
        ):
            if path.exists():
                found[name] = path
        for engine in self.engine_files():
            found[f"trt-{engine.stem.replace('model.', '')}@{engine.parent.name}"] = engine
        return found
