"""Lineage: staleness down the manifest chain, and the one line that says what remakes it.

checkpoint.pt -> model.onnx -> model.int8-{cpu,trt}.onnx -> engines/<machine>/model.<precision>.engine:
every manifest records the file it was made from (parent_file, found in its run directory) and
that file's sha256. An artifact is stale when any link up its chain no longer holds:
:func:`stale_link` finds the link nearest the root and :func:`stale_reason` says it in one line
with the commands that remake everything below it. A missing parent (a device that has only the
engine) is not stale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.atomic import sha256_file
from edge.manifest import manifest_path, read_manifest
from edge.verify import remake_command, run_root

_MADE = {
    "onnx": "exported",
    "onnx-int8-cpu": "quantized",
    "onnx-int8-trt": "quantized",
    "onnx-int8-openvino": "quantized",
    "engine": "built",
    "calibration": "drawn",
}


@dataclass(frozen=True)
class StaleLink:
    """A link of the manifest chain that no longer holds: ``artifact``'s manifest records
    ``recorded`` as the sha256 of ``parent`` (None: none recorded), which now hashes to ``current``."""

    artifact: Path
    parent: Path
    recorded: str | None
    current: str


def artifact_parent(artifact: str | os.PathLike[str]) -> Path | None:
    """The file ``artifact`` was made from, as its manifest records it (``parent_file``, in the
    artifact's run directory), whether or not it exists here; None without a manifest or a parent.
    The one parent lookup: inspect, bench and the staleness checks all use it."""
    path = Path(artifact)
    if not manifest_path(path).exists():
        return None
    manifest = read_manifest(path)
    if manifest.parent_file is None:
        return None
    return run_root(path, manifest.kind) / manifest.parent_file


def lineage(artifact: str | os.PathLike[str]) -> list[Path]:
    """``artifact`` and the ancestors present here, nearest first (``model.int8-cpu.onnx``,
    ``model.onnx``, ``checkpoint.pt``); the chain ends at an ancestor that is absent, has no
    manifest or records no parent."""
    chain = [Path(artifact)]
    while (parent := artifact_parent(chain[-1])) is not None and parent.exists() and parent not in chain:
        chain.append(parent)
    return chain


def _link(child: Path, parent: Path) -> StaleLink | None:
    """The link child -> parent when it no longer holds: the parent's file (hashed now, so a file
    replaced behind its own manifest counts too) is not the one the child's manifest recorded."""
    recorded = read_manifest(child).parent_sha256
    current = sha256_file(parent)
    return None if recorded == current else StaleLink(child, parent, recorded, current)


def is_stale(artifact: str | os.PathLike[str], parent: str | os.PathLike[str]) -> bool | None:
    """One link: True when ``parent`` changed since the artifact was made from it (or the artifact
    or its manifest is missing); None when the parent is absent (a device that has only the
    artifact: not stale, but it cannot be rebuilt here). :func:`stale_link` follows the whole chain."""
    artifact, parent = Path(artifact), Path(parent)
    if not artifact.exists() or not manifest_path(artifact).exists():
        return True
    if not parent.exists():
        return None
    return _link(artifact, parent) is not None


def stale_link(artifact: str | os.PathLike[str]) -> StaleLink | None:
    """The stale link of ``artifact``'s chain nearest the root (where the remaking starts): its own
    link, or an ancestor's (an INT8 model quantized from a stale ``model.onnx`` is stale too).
    None when every link present holds, including an artifact without a manifest or whose parent
    is absent (a deployed bundle: not stale)."""
    chain = lineage(artifact)
    for child, parent in reversed(list(zip(chain, chain[1:]))):
        link = _link(child, parent)
        if link is not None:
            return link
    return None


def stale_reason(artifact: str | os.PathLike[str]) -> str | None:
    """One line saying why ``artifact`` is stale and what remakes it, or None when it is current
    (or cannot be judged: no manifest, parent absent). Names the first stale link of the chain and
    the commands from there down to ``artifact``, e.g. "model.onnx was exported from a different
    checkpoint.pt (sha256 ab12cd34ef56.. recorded, 0123456789ab.. now): re-run `edge export RUN`,
    then `edge quantize RUN --target cpu`"."""
    link = stale_link(artifact)
    if link is None:
        return None
    chain = lineage(artifact)
    remade = chain[: chain.index(link.artifact) + 1][::-1]  # from the stale link down to the artifact
    commands = ", then ".join(remake_command(path, read_manifest(path)) for path in remade)
    made = _MADE.get(read_manifest(link.artifact).kind, "made")
    recorded = f"{link.recorded[:12]}.." if link.recorded else "none"
    return (
        f"{link.artifact.name} was {made} from a different {link.parent.name} "
        f"(sha256 {recorded} recorded, {link.current[:12]}.. now): re-run {commands}"
    )
