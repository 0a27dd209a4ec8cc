"""Write a Triton model repository from a run (``edge triton RUN --out REPO``) and check one against
Triton's rules.

Each model is written into a hidden staging folder inside REPO, checked (its config parsed into
Triton's ``ModelConfig`` where tritonclient is installed, its layout checked always), then renamed
into place: a failed or interrupted run never leaves a half-written model that Triton would try to
load. Other models already in REPO are left alone; a model of the same name is replaced, and the
files of its previous folder (and the previous README) are kept first under ``history/<UTC time>/``
beside REPO (the run's history/ when REPO is in the run), never inside it, where Triton would take
history/ for a model.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from edge.atomic import atomic_write_text
from edge.errors import UserError
from edge.history import history_root, keeping_previous, replaces
from edge.run import BENCH_DIR, REPORT, RunDir
from edge.triton.config import choose_preferred, model_config, read_throughputs
from edge.triton.engines import engine_plans
from edge.triton.models import CONFIG, LABELS, VERSION, ModelPlan, Options, onnx_plans
from edge.triton.pbtxt import parse_config, schema_available, to_pbtxt

log = logging.getLogger(__name__)

README = "README.md"
# the file Triton looks for in a version directory when the config names none (per platform)
DEFAULT_MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}


def model_prefix(run: RunDir, options: Options) -> str:
    prefix = options.prefix or run.root.resolve().name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", prefix).strip("-")
    if not slug:
        raise UserError(f"--name {prefix!r} has no letters or digits: give a model name prefix such as 'fashion'")
    return slug


def plan_models(run_dir: str | os.PathLike[str], options: Options) -> tuple[list[ModelPlan], list[str]]:
    """Every model the run's artifacts give, tuned by its bench report, and notes on what was left out."""
    run = RunDir.open(run_dir)
    prefix = model_prefix(run, options)
    plans, notes = onnx_plans(run, options, prefix)
    engine_models, engine_notes = engine_plans(run, options, prefix)
    plans, notes = plans + engine_models, notes + engine_notes
    if not plans and notes:
        raise UserError(f"{run.root} has no artifact to serve: {'; '.join(notes)}")
    if not plans:
        raise UserError(f"{run.root} has no artifact to serve: make one with `edge export {run.root}` (or `edge engine`)")
    report = run.root / BENCH_DIR / f"{REPORT}.json"
    throughputs, unreadable = read_throughputs(report)
    if unreadable:
        notes.append(unreadable)
    for plan in plans:
        names = (
            [plan.artifact]
            if plan.platform != "tensorrt_plan"
            else [f"{plan.artifact}@{Path(s).parent.name}" for s in plan.files.values()]
        )
        choose_preferred(plan, names, throughputs, f"bench report {report}")
    return plans, notes


def config_text(plan: ModelPlan, options: Options) -> str:
    text = to_pbtxt(model_config(plan, options))
    if schema_available():
        parse_config(text, f"{plan.name}/{CONFIG}")  # a failure is a bug in this module: it names the field
    return text


def write_model(repo: Path, plan: ModelPlan, text: str) -> Path:
    """Stage ``plan``'s folder inside ``repo``, check its layout, rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{plan.name}.", suffix=".tmp", dir=repo))
    try:
        (staging / VERSION).mkdir()
        for name, source in plan.files.items():
            shutil.copyfile(source, staging / VERSION / name)
        (staging / CONFIG).write_text(text)
        if plan.spec.labels:
            (staging / LABELS).write_text("".join(f"{label}\n" for label in plan.spec.labels))
        problems = layout_problems(staging, plan.name)
        if problems:
            raise UserError(f"the model {plan.name} would not load in Triton: {'; '.join(problems)}")
        target = repo / plan.name
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{plan.name}.", suffix=".old", dir=repo))
            os.replace(target, old / plan.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return repo / plan.name


def write_repository(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: Options,
    say: Callable[[str], object] | None = None,
) -> tuple[list[ModelPlan], list[str]]:
    """Write every model of the run into ``out`` (created if needed), and its README. The model folders
    and the README it replaces are kept first (:func:`replaced_files`); ``say`` gets the line."""
    from edge.triton.readme import render_readme

    plans, notes = plan_models(run_dir, options)
    repo = Path(out)
    repo.mkdir(parents=True, exist_ok=True)
    texts = {plan.name: config_text(plan, options) for plan in plans}  # all checked before any is written
    replaced = replaced_files(repo, plans)
    anchor = repo if repo.name not in ("", "..") else Path(os.path.abspath(repo))  # --out . has a parent too
    root = history_root(anchor, RunDir.open(run_dir).root)
    with keeping_previous(root, replaced, replaces("edge triton", replaced), say=say):
        for plan in plans:
            write_model(repo, plan, texts[plan.name])
        atomic_write_text(repo / README, render_readme(repo, plans, options))
    return plans, notes


def replaced_files(repo: Path, plans: list[ModelPlan]) -> list[Path]:
    """Every file a new write of ``plans`` replaces: the whole folder of each model of the same name
    (a file the new one lacks goes with it) and the README. They are kept beside the repository,
    under its parent's (or the run's) ``history/``: inside it, Triton would take history/ for a model."""
    replaced = [path for plan in plans for path in sorted((repo / plan.name).rglob("*")) if path.is_file()]
    return replaced + [repo / README]


# ---- Triton's layout rules ----------------------------------------------------------------------


def layout_problems(model_dir: Path, name: str | None = None) -> list[str]:
    """What would stop Triton from loading ``model_dir`` (empty when nothing): a config that does not
    parse (where the schema is installed) or names another model, no numbered version directory, a
    version without the model file(s) the config names or the platform's default, a missing label file."""
    config_path = model_dir / CONFIG
    if not config_path.is_file():
        return [f"{model_dir.name} has no {CONFIG}"]
    problems: list[str] = []
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
    if not versions:
        problems.append(f"{model_dir.name} has no numbered version directory (1/)")
    if not schema_available():
        return problems
    config = parse_config(config_path.read_text(), str(config_path))
    if config.name != (name or model_dir.name):
        problems.append(f"{CONFIG} names the model {config.name!r}, its folder is {model_dir.name!r}")
    wanted = set(config.cc_model_filenames.values()) or {
        config.default_model_filename or DEFAULT_MODEL_FILES.get(config.platform, "")
    }
    for version in versions:
        missing = sorted(f for f in wanted if not (version / f).is_file())
        if missing:
            problems.append(f"{version.name}/ lacks {', '.join(missing)}")
    labels = {o.label_filename for o in config.output if o.label_filename}
    problems += [f"label file {label} is missing" for label in sorted(labels) if not (model_dir / label).is_file()]
    return problems
