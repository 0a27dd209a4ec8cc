"""A camera run's figures: the per-frame timings, what is made of them (achieved and inference-only
FPS, latency percentiles, over the whole run or the recent frames), and the result of the run."""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LIVE_WINDOW = 300  # results behind the live statistics (the final summary uses all of them)
# Every latency figure (summary, result JSON, served page, JSONL latency_ms) runs from this timestamp
# of the frame to its result: when it was grabbed, before decode (see edge.camera.sources.Frame).
LATENCY_FROM = "grabbed_at"
INTERRUPTED = "interrupted (Ctrl-C)"


class CameraMetrics:
    """Per-frame timings and the figures made from them (all times in seconds, reported in ms)."""

    def __init__(self) -> None:
        self.latency = array("d")  # grabbed (before decode) -> result
        self.inference = array("d")  # runner.infer only
        self.preprocess = array("d")  # spec.apply
        self.first_result: float | None = None
        self.last_result: float | None = None
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=LIVE_WINDOW)

    def add(self, latency: float, inference: float, preprocess: float, result_at: float) -> None:
        self.latency.append(latency)
        self.inference.append(inference)
        self.preprocess.append(preprocess)
        self.first_result = result_at if self.first_result is None else self.first_result
        self.last_result = result_at
        self._recent.append((result_at, latency, inference))

    @property
    def classified(self) -> int:
        return len(self.latency)

    def figures(self, recent: bool = False) -> dict[str, float | None]:
        """Achieved FPS (results per second of wall time), inference-only FPS, latency percentiles."""
        if recent:
            rows = list(self._recent)
            count = len(rows)
            span = rows[-1][0] - rows[0][0] if rows else 0.0
            latency = np.array([r[1] for r in rows])
            inference = np.array([r[2] for r in rows])
        else:
            count = self.classified
            span = (self.last_result or 0.0) - (self.first_result or 0.0)
            latency = np.frombuffer(self.latency, dtype=np.float64) if self.latency else np.zeros(0)
            inference = np.frombuffer(self.inference, dtype=np.float64) if self.inference else np.zeros(0)
        out: dict[str, float | None] = {
            "achieved_fps": (count - 1) / span if count >= 2 and span > 0 else None,
            "inference_fps": float(len(inference) / inference.sum()) if len(inference) and inference.sum() > 0 else None,
        }
        for name, values in (("latency", latency), ("inference", inference)):
            for q in (50, 90, 99):
                out[f"{name}_p{q}_ms"] = float(np.percentile(values, q) * 1000) if len(values) else None
        pre = np.frombuffer(self.preprocess, dtype=np.float64) if self.preprocess else np.zeros(0)
        out["preprocess_p50_ms"] = float(np.median(pre) * 1000) if len(pre) else None
        return out


@dataclass
class CameraResult:
    """What a run did: its figures, counts and why it ended (the first reason to stop)."""

    figures: dict[str, float | None]
    captured: int
    classified: int
    dropped: int
    retries: int
    reconnects: int
    end_reason: str
    source: str
    model: str
    runner: dict[str, Any]
    wall_s: float
    outputs: dict[str, str] = field(default_factory=dict)
    threads: dict[str, Any] = field(default_factory=dict)  # ThreadChoice.to_dict(): the setting and how it was chosen
    paced: bool = True  # False: a file read as fast as the model takes frames (its latency is mostly queueing)
    preprocessed: int = 0  # frames the capture thread preprocessed (the others were replaced before the model was free)
    preprocessed_on_take: int = 0  # of the classified frames, those the capture thread had left raw
    out_of_order: int = 0  # results (two streams) that came after a newer frame's: counted and logged, not drawn

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C was the first reason to stop (``edge camera`` then exits 130)."""
        return self.end_reason == INTERRUPTED

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.figures)
        data.update(
            latency_from=LATENCY_FROM,
            captured=self.captured,
            classified=self.classified,
            dropped=self.dropped,
            retries=self.retries,
            reconnects=self.reconnects,
            end_reason=self.end_reason,
            source=self.source,
            model=self.model,
            runner=self.runner,
            wall_s=self.wall_s,
            outputs=self.outputs,
            threads=self.threads,
            paced=self.paced,
            preprocessed=self.preprocessed,
            preprocessed_on_take=self.preprocessed_on_take,
            out_of_order=self.out_of_order,
        )
        return data


def format_figure(value: float | None, digits: int = 1) -> str:
    """A figure as tables and status lines show it: ``-`` when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"
