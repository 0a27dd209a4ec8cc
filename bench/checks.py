"""What a gate check is (``Check``), shared by ``bench.gate`` and ``bench.latency_gate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Check:
    name: str
    status: str  # pass | fail | warn | skip
    detail: str


def same_machine(report: dict[str, Any], baseline: dict[str, Any]) -> bool:
    """Both reports carry a machine fingerprint and it is the same (two unknowns are not a match)."""
    mine, theirs = report["environment"].get("machine_fingerprint"), baseline["environment"].get("machine_fingerprint")
    return bool(mine) and mine == theirs
