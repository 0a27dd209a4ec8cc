"""Show what an artifact is: its PreprocessSpec and manifest as tables (or JSON).

PATH is a run directory (every artifact in it, with staleness), a checkpoint (.pt), an ONNX model,
an engine, or any file with a ``.json`` manifest beside it. Staleness follows the manifest chain
(``edge.lineage.stale_link``): an INT8 model quantized from a stale ``model.onnx`` shows
"stale via model.onnx", and a line under the table says what to re-run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from edge.artifact_spec import artifact_spec
from edge.console import make_console, make_table
from edge.errors import UserError
from edge.lineage import artifact_parent, stale_link, stale_reason
from edge.manifest import Manifest, manifest_path, read_manifest
from edge.runners import available_backends, compatible_backends
from edge.spec import PreprocessSpec
from edge.verify import unverified_reason

console = make_console()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="run directory or artifact file")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_dir():
        print_run(path, as_json=args.json)
    else:
        print_artifact(path, as_json=args.json)
    return 0


def spec_table(spec: PreprocessSpec, title: str = "PreprocessSpec") -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in spec.to_dict().items():
        if key == "labels":
            shown = ", ".join(value[:8]) + (f", ... ({len(value)} in all)" if len(value) > 8 else "")
            table.add_row("labels", f"{len(value)}: {shown}")
        else:
            table.add_row(key, str(value))
    return table


EXPANDED = ("qat",)  # provenance objects shown field by field: `edge quantize --qat`'s recipe


def manifest_table(manifest: Manifest) -> Table:
    table = Table(title=f"Manifest of {manifest.file}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("kind", manifest.kind)
    table.add_row("sha256", manifest.sha256)
    table.add_row("size", f"{manifest.size_bytes / 1e6:.2f} MB")
    table.add_row("parent", f"{manifest.parent_file} ({(manifest.parent_sha256 or '-')[:16]})")
    table.add_row("created", manifest.created_at)
    for section in ("provenance", "metrics"):
        for key, value in getattr(manifest, section).items():
            if section == "provenance" and key in EXPANDED and isinstance(value, dict):
                for part, item in value.items():  # the QAT recipe, one row per field
                    table.add_row(f"{section}.{key}.{part}", _short(item))
            else:
                table.add_row(f"{section}.{key}", _short(value))
    env = manifest.environment
    table.add_row("built on", f"{env.get('cpu_model', '?')} x{env.get('cpu_count', '?')} {env.get('gpu_name', '')}".strip())
    table.add_row("packages", ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()))
    table.add_row("backends", backends_text(Path(manifest.file), manifest.kind))
    return table


def backends_text(path: Path, kind: str | None) -> str:
    """The backends that run an artifact, those not installed here marked: "onnxruntime, openvino (not installed)"."""
    here = available_backends(path, kind)
    return ", ".join(b if b in here else f"{b} (not installed)" for b in compatible_backends(path, kind)) or "-"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) < 200 else text[:197] + "..."


def print_artifact(path: str | Path, as_json: bool = False) -> None:
    path = Path(path)
    manifest = read_manifest(path) if manifest_path(path).exists() else None
    if as_json:
        data = manifest.to_dict() if manifest else {"spec": artifact_spec(path).to_dict()}
        print(json.dumps(data, indent=2, default=str))
        return
    spec = manifest.preprocess_spec if manifest and manifest.spec else artifact_spec(path)
    console.print(spec_table(spec, title=f"PreprocessSpec of {path}"))
    if manifest:
        console.print(manifest_table(manifest))
    else:
        console.print(f"[yellow]unverified: {unverified_reason(path)}[/yellow]")


def print_run(root: Path, as_json: bool = False) -> None:
    from edge.measure.rows import run_artifacts
    from edge.run import RunDir

    run_dir = RunDir.open(root)
    artifacts = run_artifacts(run_dir)
    if not artifacts:
        raise UserError(f"{root} holds no artifacts: create them with `edge pretrained` or `edge train`")
    if as_json:
        print(
            json.dumps(
                {n: read_manifest(p).to_dict() for n, p in artifacts.items() if manifest_path(p).exists()}, indent=2, default=str
            )
        )
        return
    table = make_table("artifact", "file", "kind", "size MB", "sha256", "status", "top-1", "runs here on", title=f"Run {root}")
    spec = None
    reasons: list[str] = []
    for name, path in artifacts.items():
        if not manifest_path(path).exists():
            table.add_row(
                name, path.name, "?", f"{path.stat().st_size / 1e6:.1f}", "-", "[red]unverified (no manifest)[/red]", "-", "-"
            )
            continue
        manifest = read_manifest(path)
        spec = spec or (manifest.preprocess_spec if manifest.spec else None)
        status = staleness(path)
        reason = stale_reason(path) if status.startswith("[red]") else None
        if reason is not None:
            reasons.append(f"{path.relative_to(root)}: {reason}")
        top1 = manifest.metrics.get("top1")  # percent (the quantizer's acceptance on the test split)
        table.add_row(
            name,
            str(path.relative_to(root)),
            manifest.kind,
            f"{manifest.size_bytes / 1e6:.1f}",
            manifest.sha256[:12],
            status,
            f"{top1:.2f}%" if isinstance(top1, float) else "-",
            ", ".join(available_backends(path, manifest.kind)) or "[yellow]none installed[/yellow]",
        )
    if spec is not None:
        console.print(spec_table(spec, title=f"PreprocessSpec of {root}"))
    console.print(table)
    for line in reasons:
        console.print(f"[red]stale[/red] {line}", highlight=False, soft_wrap=True)


def staleness(path: Path) -> str:
    """An artifact's status cell: stale (its own link), stale via the ancestor whose link broke,
    parent absent (a deployed copy: not stale), or current."""
    link = stale_link(path)
    if link is not None:
        return "[red]stale[/red]" if link.artifact == path else f"[red]stale via {link.artifact.name}[/red]"
    parent = artifact_parent(path)
    if parent is not None and not parent.exists():
        return "parent absent"
    return "[green]current[/green]"
