"""The query-sample library: the evaluation images, preprocessed into memory as LoadGen asks.

LoadGen names the samples a performance run may touch (``load``) before it starts timing, and
frees them after (``unload``); they are preprocessed by the spec (``PreprocessSpec.apply``, the
same as bench's compute-only cells) into host memory then, so no query pays for preprocessing.
How many a performance run uses is the count that fits ``budget_mib`` (LoadGen's
``performance_sample_count``); an accuracy run walks every image, that many at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.spec import PreprocessSpec

DEFAULT_BUDGET_MIB = 256


class SampleLibrary:
    """``images`` (decoded, uint8) with their ``labels``; at most ``budget_mib`` of preprocessed samples loaded."""

    def __init__(self, spec: PreprocessSpec, images: Sequence[np.ndarray], labels: Sequence[int] | None, budget_mib: float):
        if not images:
            raise ValueError("a sample library needs images")
        self.spec, self.images = spec, images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.budget_mib = float(budget_mib)
        self.sample_bytes = 3 * spec.input_size * spec.input_size * 4  # float32 CHW
        fits = int(self.budget_mib * 2**20 // self.sample_bytes)
        self.performance_count = max(1, min(len(images), fits))
        self.loaded: dict[int, np.ndarray] = {}

    @property
    def total(self) -> int:
        return len(self.images)

    def load(self, indices: list[int]) -> None:
        for i in indices:
            if i not in self.loaded:
                self.loaded[i] = self.spec.apply(self.images[i])

    def unload(self, indices: list[int]) -> None:
        for i in indices:
            self.loaded.pop(i, None)

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """The loaded samples of ``indices`` as one float32 NCHW batch."""
        return np.stack([self.loaded[i] for i in indices])

    def describe(self) -> dict[str, Any]:
        return {
            "total_count": self.total,
            "performance_count": self.performance_count,
            "sample_bytes": self.sample_bytes,
            "budget_mib": self.budget_mib,
        }

    def construct(self, lg: Any) -> Any:
        """LoadGen's handle of this library (``lg.DestroyQSL`` frees it)."""
        return lg.ConstructQSL(self.total, self.performance_count, self.load, self.unload)
