"""INT8 on models that do not quantize easily, beside the peers (issue 26): a script that prints what it measured.

    python -m bench.scripts.hard_models_benchmark [--models NAME ...] [--epochs N] [--train-limit N]
        [--image-size PX] [--test-limit N] [--work runs/hard-models] [--retrain]
        [--batch 8] [--rounds 10] [--window 0.5] [--no-nncf] [--no-modelopt] [--no-install]

For each model (timm / torchvision names; default MobileNetV3-Large, EfficientNet-B0, ResNet-50 and
ViT-Tiny/16: squeeze-excite, hard-swish/SiLU, a deep residual CNN, a transformer):

1. Trained by ``edge train`` on the demo data (Fashion-MNIST) at a small input size for a fixed
   budget (its RECIPES entry; --epochs/--train-limit/--image-size override every model) from a
   seeded random initialisation: pretrained ImageNet weights are not reachable here, and the output
   says so. Then ``edge export`` and ``edge calibrate`` (512 training images). A trained run in
   --work is reused while its recipe is unchanged (--retrain trains it again).
2. ``edge quantize RUN --target cpu`` and ``--target trt`` with every default (accepted or not, as
   the command says).
3. The peers on the same calibration images (the run's calibration set), each with its defaults
   (bench/scripts/peers.py): ONNX Runtime's ``quantize_static``; NNCF's ``nncf.quantize`` and its
   ``quantize_with_accuracy_control`` on the OpenVINO model (validated on the run's val split, the
   images our --method auto chooses on, at our --max-drop budget); NVIDIA Model Optimizer's ONNX
   PTQ (target trt, in its own venv, see peers.py). Peer files are cached in RUN/peers by
   calibration hash.
4. Accuracy of every file on the run's test split (--test-limit; 0 = all 10,000 images), against
   ONNX Runtime's FP32 logits: top-1, the drop in points and the top-1 agreement, each with its
   exact 95% interval (two-sided: each bound one-sided at 97.5%; the drop's from the paired flips),
   and the weighted layers (Conv/Gemm/MatMul) left in float. Files run on ONNX Runtime, except
   NNCF's accuracy-control IR (OpenVINO only). Target-trt accuracy is simulated on the CPU: ONNX
   Runtime's kernels, not TensorRT's.
5. Speed at batch --batch: every CPU file on ONNX Runtime and/or OpenVINO against ONNX Runtime FP32
   and OpenVINO FP32, interleaved rounds (edge.measure.timing), the median of per-round ratios with
   its interval, absolute ms beside it. Target-trt files are not timed (TensorRT needs a GPU).

Then the targets, each met or not: accepted on both targets; drop <= 0.3 points (0.5 for a ViT)
on the test split; at least as good as the best peer of the same target on drop and agreement;
our target-cpu file at least as fast as NNCF's default on OpenVINO and at least 1.5x ONNX
Runtime FP32 (2x for ResNet-50) on its fastest runtime. The table's figures go to
WORK/hard_models.json as well.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_write_text
from edge.errors import UserError

DATA = "fashion-mnist"
DEFAULT_MODELS = ("mobilenetv3_large_100", "efficientnet_b0", "resnet50", "vit_tiny_patch16_224")
# The fixed training budget of each model (from random init: no pretrained weights reachable here),
# each CNN trained to about the same float top-1 (88.7-89.9% on the test split): ResNet-50 at 2 epochs
# stopped at 86.6%, its answers full of near-ties no quantizer keeps (docs/figures.md#resnet-50-trained-2-epochs).
# Training all four takes about 45 minutes on 2 idle CPU cores (docs/quantize.md#hard-models).
RECIPES: dict[str, dict[str, Any]] = {
    "mobilenetv3_large_100": {"image_size": 64, "train_limit": 30000, "epochs": 3, "lr": 3e-3},
    "efficientnet_b0": {"image_size": 64, "train_limit": 20000, "epochs": 3, "lr": 3e-3},
    "resnet50": {"image_size": 32, "train_limit": 24000, "epochs": 6, "lr": 2e-3},
    "vit_tiny_patch16_224": {"image_size": 64, "train_limit": 24000, "epochs": 4, "lr": 1e-3},
}
FALLBACK_RECIPE = {"image_size": 64, "train_limit": 9000, "epochs": 3, "lr": 2e-3}
TRAIN_VAL_LIMIT = 1000
RECIPE_FILE = "hard-models-recipe.json"

TWO_SIDED = 0.975  # each one-sided bound at 97.5%: a 95% two-sided interval
MAX_DROP_POINTS, MAX_DROP_VIT = 0.3, 0.5
MIN_SPEEDUP, MIN_SPEEDUP_RESNET50 = 1.5, 2.0
QAT_MIN_RECOVERY = 0.7
QAT_WHEN_DROP_OVER = 0.5
CPU_PEERS = ("onnxruntime-default", "nncf-default", "nncf-accuracy-control")
TRT_PEERS = ("modelopt",)
OUR_TARGETS = ("cpu", "trt", "openvino")
# Our target -> (the peers it is compared with, the target those peer rows carry). NNCF's files
# are OpenVINO's own INT8 (their rows say cpu: they run on ONNX Runtime too).
PEERS = {"cpu": (CPU_PEERS, "cpu"), "trt": (TRT_PEERS, "trt"), "openvino": (CPU_PEERS, "cpu")}


def recipe(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """The model's training budget with the flags that override it."""
    chosen = dict(RECIPES.get(arch, FALLBACK_RECIPE))
    for key in ("image_size", "train_limit", "epochs"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    return chosen


def is_transformer(arch: str) -> bool:
    from train.models import patch_size

    return patch_size(arch) is not None


def edge_command(*arguments: str, log: Path, threads: int | None = None) -> int:
    """``python -m edge ...`` as a user runs it, its output in ``log``; returns the exit status.
    ``threads`` caps PyTorch's and OpenMP's threads (OMP_NUM_THREADS): on a machine shared beyond its
    cores, spinning OpenMP threads slow training ten-fold."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    with open(log, "w") as handle:
        return subprocess.run(
            [sys.executable, "-m", "edge", *arguments], stdout=handle, stderr=subprocess.STDOUT, env=env
        ).returncode


def train_run(arch: str, args: argparse.Namespace, work: Path) -> Path:
    """The trained, exported and calibrated run of ``arch`` (reused while its recipe holds)."""
    import torch

    from train.models import build_model

    root = work / arch
    chosen = {"arch": arch, **recipe(arch, args), "data": DATA, "val_limit": TRAIN_VAL_LIMIT, "seed": 0}
    recipe_file = root / RECIPE_FILE
    done = [root / name for name in ("checkpoint.pt", "model.onnx", "calibration/calibration.npy")]
    if (
        not args.retrain
        and recipe_file.exists()
        and json.loads(recipe_file.read_text()) == chosen
        and all(p.exists() for p in done)
    ):
        print(f"{arch}: reusing the trained run {root} ({_recipe_text(chosen)})")
        return root
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "peers", ignore_errors=True)  # the peers' files and logits belong to the old model
    init = work / f"{arch}.init.pt"
    torch.manual_seed(0)
    torch.save(build_model(arch, num_classes=None, pretrained=False).state_dict(), init)
    print(
        f"{arch}: training from a seeded random initialisation ({_recipe_text(chosen)}); pretrained weights are not reachable here"
    )
    start = time.perf_counter()
    train = [
        "train", "--out", str(root), "--data", DATA, "--model", arch, "--weights", str(init),
        "--image-size", str(chosen["image_size"]), "--epochs", str(chosen["epochs"]),
        "--train-limit", str(chosen["train_limit"]), "--val-limit", str(TRAIN_VAL_LIMIT), "--test-limit", "0",
        "--lr", str(chosen["lr"]), "--backbone-lr-scale", "1", "--mode", "finetune", "--augment", "none",
        "--drop-rate", "0", "--warmup-epochs", "0.3", "--seed", "0",
    ]  # fmt: skip
    if not is_transformer(arch):
        train.append("--channels-last")
    for step, arguments in (
        ("train", train),
        ("export", ["export", str(root)]),
        ("calibrate", ["calibrate", str(root), "--data", DATA]),
    ):
        status = edge_command(*arguments, log=root / f"hard-models-{step}.log", threads=args.threads)
        if status != 0:
            raise UserError(f"{arch}: edge {step} failed (exit {status}); see {root / f'hard-models-{step}.log'}")
    atomic_write_text(recipe_file, json.dumps(chosen, indent=2))
    print(f"{arch}: trained, exported and calibrated in {time.perf_counter() - start:.0f} s")
    return root


def _recipe_text(chosen: dict[str, Any]) -> str:
    return f"{chosen['image_size']} px, {chosen['train_limit']} training images, {chosen['epochs']} epochs, lr {chosen['lr']:g}"


def quantize_ours(root: Path, target: str, threads: int | None, reuse: bool = False) -> dict[str, Any]:
    """``edge quantize RUN --target T --data fashion-mnist`` with every other default, on a run
    cleared of earlier INT8 files of that target (kept under RUN/history). ``reuse``: a file this
    command wrote before from the current model.onnx is taken as it is (the figures say so)."""
    from edge.history import keep_previous
    from edge.manifest import manifest_path
    from edge.run import RunDir, rejected_name

    run = RunDir.open(root)
    path = run.int8(target)
    rejected = path.with_name(rejected_name(path))
    earlier = _earlier_result(root, target, [path, rejected]) if reuse else None
    if earlier is not None:
        return earlier
    keep_previous(root, [p for p in (path, rejected) if p.exists()], "hard-models benchmark: quantizing again", retire=True)
    start = time.perf_counter()
    status = edge_command(
        "quantize",
        str(root),
        "--target",
        target,
        "--data",
        DATA,
        log=root / f"hard-models-quantize-{target}.log",
        threads=threads,
    )
    seconds = time.perf_counter() - start
    written = path if path.exists() else rejected if rejected.exists() else None
    if status == 2 or written is None or not manifest_path(written).exists():
        return {"error": f"edge quantize --target {target} failed (exit {status}); see {root}/hard-models-quantize-{target}.log"}
    atomic_write_text(root / f"hard-models-quantize-{target}.seconds", f"{seconds}\n")
    return _ours_result(written, seconds, status)


def _ours_result(written: Path, seconds: float | None, status: int | None) -> dict[str, Any]:
    from edge.manifest import read_manifest

    manifest = read_manifest(written)
    return {
        "path": written,
        "seconds": seconds,
        "accepted": bool(manifest.metrics.get("accepted", status == 0)),
        "exit": status,
        "method": manifest.provenance.get("chosen_method") or manifest.provenance.get("method"),
        "excluded": manifest.provenance.get("nodes_excluded"),
        "reason": manifest.metrics.get("reason"),
    }


def _earlier_result(root: Path, target: str, candidates: list[Path]) -> dict[str, Any] | None:
    """Our earlier file of ``target`` if it was quantized from the current model.onnx (its
    manifest's parent hash) by this benchmark (its timing file), else None."""
    from edge.manifest import manifest_path, read_manifest

    timing = root / f"hard-models-quantize-{target}.seconds"
    if not timing.exists():
        return None
    parent = read_manifest(root / "model.onnx").sha256
    for path in candidates:
        if path.exists() and manifest_path(path).exists() and read_manifest(path).parent_sha256 == parent:
            print(f"{root.name}: reusing {path.name} (--reuse-ours)")
            return {**_ours_result(path, float(timing.read_text()), None), "reused": True}
    return None


def quantize_qat(root: Path, target: str, threads: int | None, reuse: bool = False) -> dict[str, Any]:
    """``edge quantize RUN --target T --qat`` (its recipe, every other default) into
    RUN/model.int8-<target>.qat.onnx, beside our PTQ file (``reuse``: as ``quantize_ours``)."""
    from edge.manifest import manifest_path
    from edge.run import rejected_name

    out = root / f"model.int8-{target}.qat.onnx"
    rejected = out.with_name(rejected_name(out))
    log = root / f"hard-models-qat-{target}.log"
    earlier = _earlier_result(root, f"{target}-qat", [out, rejected]) if reuse else None
    if earlier is not None:
        return {**earlier, "method": "qat"}
    start = time.perf_counter()
    status = edge_command(
        "quantize", str(root), "--target", target, "--data", DATA, "--qat", "--out", str(out), log=log, threads=threads
    )
    written = out if out.exists() else rejected
    if status == 2 or not written.exists() or not manifest_path(written).exists():
        return {"error": f"edge quantize --qat failed (exit {status}); see {log}"}
    seconds = time.perf_counter() - start
    atomic_write_text(root / f"hard-models-quantize-{target}-qat.seconds", f"{seconds}\n")
    return {**_ours_result(written, seconds, status), "method": "qat"}


def peer_files(root: Path, args: argparse.Namespace, val: Any) -> dict[str, dict[str, Any]]:
    """Every peer's quantized file of the run (cached in RUN/peers by calibration hash): name ->
    {"path", "seconds", "target"} or {"error"}."""
    from bench.scripts import peers
    from edge.errors import MissingDependencyError

    tensor, content_hash, _ = peers.run_calibration(root)
    float_model = root / "model.onnx"
    cache = root / "peers"
    cache.mkdir(exist_ok=True)
    key = content_hash[:12]
    wanted: dict[str, tuple[str, str, Any]] = {
        "onnxruntime-default": ("cpu", ".onnx", lambda out: peers.ort_default_quantize(float_model, out, tensor)),
        "nncf-default": ("cpu", ".onnx", lambda out: peers.nncf_default_quantize(float_model, out, tensor)),
        "nncf-accuracy-control": (
            "cpu",
            ".xml",
            lambda out: peers.nncf_accuracy_control_quantize(float_model, out, tensor, val.tensor, val.labels, args.max_drop),
        ),
        "modelopt": (
            "trt",
            ".onnx",
            lambda out: peers.modelopt_quantize(
                float_model, out, tensor, peers.modelopt_python(Path(args.modelopt_venv), create=not args.no_install)
            ),
        ),
    }
    skipped = {"nncf-default": args.no_nncf, "nncf-accuracy-control": args.no_nncf, "modelopt": args.no_modelopt}
    files: dict[str, dict[str, Any]] = {}
    for name, (target, suffix, quantize) in wanted.items():
        detail = f"-{args.max_drop:g}pt-val{len(val)}" if name == "nncf-accuracy-control" else ""
        out = cache / f"{name}-{key}{detail}{suffix}"
        seconds_file = out.with_suffix(".seconds")
        if out.exists() and seconds_file.exists():  # a cached file is shown even when the flag says not to run it
            files[name] = {"target": target, "path": out, "seconds": float(seconds_file.read_text()), "cached": True}
            continue
        if skipped.get(name):
            files[name] = {"target": target, "error": "skipped by flag"}
            continue
        print(f"{root.name}: quantizing with {name} on {len(tensor)} calibration images")
        try:
            seconds = quantize(out)
        except MissingDependencyError as exc:
            files[name] = {"target": target, "error": f"not installed ({exc.package})"}
            continue
        except Exception as exc:  # one peer failing leaves a row saying why, never loses the table
            files[name] = {"target": target, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            continue
        atomic_write_text(seconds_file, str(seconds))
        files[name] = {"target": target, "path": out, "seconds": seconds, "cached": False}
    return files


def test_logits(path: Path, cache: Path | None, runtime: str, spec: Any, tensor: np.ndarray, threads: int | None) -> np.ndarray:
    """The file's logits over the test tensor; kept beside ``cache`` (a file that does not change
    between runs: the float model, a peer's file) as ``<cache>.test<N>.npy`` and read back from there."""
    from bench.scripts.peers import logits_over, make_runner

    saved = None if cache is None else cache.with_name(f"{cache.name}.test{len(tensor)}.npy")
    if saved is not None and saved.exists():
        return np.load(saved)
    with make_runner(runtime, path, spec, threads) as runner:
        logits = logits_over(runner, tensor)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.save(saved, logits)
    return logits


def accuracy(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """top-1, drop (paired) and agreement against the reference, with their 95% two-sided intervals."""
    from edge.measure.paired import binomial_bounds, paired_flips

    pred, ref = logits.argmax(1), reference.argmax(1)
    n = len(labels)
    correct = int(np.sum(pred == labels))
    flips = paired_flips(labels, ref, pred, confidence=TWO_SIDED)
    top1_low, top1_high = binomial_bounds(correct, n, TWO_SIDED)
    agree_low, agree_high = binomial_bounds(flips.agree, n, TWO_SIDED)
    return {
        "n": n,
        "top1": 100.0 * correct / n,
        "top1_interval": [100 * top1_low, 100 * top1_high],
        "drop": flips.drop_points,
        "drop_interval": [flips.drop_lower_points, flips.drop_upper_points],
        "agreement": 100.0 * flips.agree / n,
        "agreement_interval": [100 * agree_low, 100 * agree_high],
        "flips": n - flips.agree,
        "lost": flips.lost,
        "gained": flips.gained,
    }


def measure_model(arch: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train (or reuse), quantize ours and the peers, then accuracy and speed: one model's figures."""
    from edge.artifact_spec import artifact_spec
    from edge.quantize.evaluate import eval_set_from_data
    from edge.quantize.options import DEFAULT_VAL_LIMIT

    start = time.perf_counter()
    root = train_run(arch, args, work)
    ours = {target: quantize_ours(root, target, args.threads, args.reuse_ours) for target in OUR_TARGETS}
    spec = artifact_spec(root / "model.onnx")
    val = eval_set_from_data(root, DATA, "val", DEFAULT_VAL_LIMIT, spec, progress=False)
    files = peer_files(root, args, val)
    del val
    test = eval_set_from_data(root, DATA, "test", args.test_limit or None, spec, progress=False)
    entries = [("ours", target, ours[target]) for target in OUR_TARGETS] + [
        (name, info["target"], info) for name, info in files.items()
    ]
    reference = test_logits(root / "model.onnx", root / "peers" / "fp32.onnx", "onnxruntime", spec, test.tensor, args.threads)
    rows: list[dict[str, Any]] = [
        {"quantizer": "fp32", "target": None, "runtime": "onnxruntime", **accuracy(reference, reference, test.labels)}
    ]
    for quantizer, target, info in entries:
        rows.append(file_row(quantizer, target, info, reference, test, spec, args))
    for target in OUR_TARGETS:  # QAT where PTQ alone misses 0.5 points on the test split or is not accepted
        ptq = next(r for r in rows if r["quantizer"] == "ours" and r["target"] == target)
        if "error" not in ptq and (ptq["drop"] > QAT_WHEN_DROP_OVER or not ptq["accepted"]) and not args.no_qat:
            why = f"drop {ptq['drop']:+.2f} pts > {QAT_WHEN_DROP_OVER}" if ptq["drop"] > QAT_WHEN_DROP_OVER else "not accepted"
            print(f"{arch}: target {target} PTQ {why}: edge quantize --qat")
            rows.append(
                file_row(
                    "ours-qat", target, quantize_qat(root, target, args.threads, args.reuse_ours), reference, test, spec, args
                )
            )
    compare_with_peers(rows, reference.argmax(1), test.labels)
    for row in rows:
        row.pop("_pred", None)
    speed = measure_speed(root, rows, spec, test.tensor, args)
    figures = {
        "model": arch,
        "transformer": is_transformer(arch),
        "recipe": json.loads((root / RECIPE_FILE).read_text()),
        "float_top1": rows[0]["top1"],
        "test_count": len(test),
        "rows": rows,
        "speed": speed,
        "seconds": time.perf_counter() - start,
    }
    figures["targets"] = judge_targets(figures)
    return figures


def file_row(
    quantizer: str, target: str, info: dict[str, Any], reference: np.ndarray, test: Any, spec: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """One quantized file's row: accuracy on the test split, float layers, time to quantize."""
    from bench.scripts import peers

    row: dict[str, Any] = {"quantizer": quantizer, "target": target}
    if "error" in info:
        return {**row, "error": info["error"]}
    path = Path(info["path"])
    # NNCF's accuracy-control IR and our target-openvino file run on OpenVINO, the rest on ONNX Runtime
    runtime = "openvino" if path.suffix == ".xml" or target == "openvino" else "onnxruntime"
    cache = None if quantizer.startswith("ours") else path  # ours is quantized afresh on every run
    logits = test_logits(path, cache, runtime, spec, test.tensor, args.threads)
    floats, weighted = peers.float_weighted_layers(path)
    row.update(
        runtime=runtime,
        path=str(path),
        simulated=target == "trt",
        float_layers=floats,
        weighted_layers=weighted,
        quantize_s=info.get("seconds"),
        **accuracy(logits, reference, test.labels),
    )
    row["_pred"] = logits.argmax(1)  # for the paired comparisons with the peers (not saved)
    if quantizer.startswith("ours"):
        row.update(accepted=info["accepted"], method=info["method"], excluded=info["excluded"], reason=info["reason"])
    return row


def measure_speed(
    root: Path, rows: list[dict[str, Any]], spec: Any, tensor: np.ndarray, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Interleaved rounds at batch --batch: FP32 on both runtimes, our target-cpu file on both, our
    target-openvino file on OpenVINO, ONNX Runtime's peer on ONNX Runtime, NNCF's files on OpenVINO.
    One row each (``target``: which of our files), ratios against ONNX Runtime FP32 and the same
    runtime's FP32, with intervals."""
    from bench.scripts.peers import active, make_runner
    from edge.measure.intervals import paired_ratio
    from edge.measure.timing import interleaved_rounds

    by_name = {(row["quantizer"], row["target"]): row for row in rows if row.get("target") != "trt" and "error" not in row}
    cells = [("fp32", None, "onnxruntime", root / "model.onnx"), ("fp32", None, "openvino", root / "model.onnx")]
    if ("ours", "cpu") in by_name:
        cells += [("ours", "cpu", runtime, Path(by_name[("ours", "cpu")]["path"])) for runtime in ("onnxruntime", "openvino")]
    if ("ours", "openvino") in by_name:
        cells.append(("ours", "openvino", "openvino", Path(by_name[("ours", "openvino")]["path"])))
    if ("onnxruntime-default", "cpu") in by_name:
        cells.append(("onnxruntime-default", "cpu", "onnxruntime", Path(by_name[("onnxruntime-default", "cpu")]["path"])))
    for name in ("nncf-default", "nncf-accuracy-control"):
        if (name, "cpu") in by_name:
            cells.append((name, "cpu", "openvino", Path(by_name[(name, "cpu")]["path"])))
    batch = np.ascontiguousarray(tensor[: args.batch])
    labelled = {f"{name}/{target}/{runtime}": (name, target, runtime, path) for name, target, runtime, path in cells}
    runners = [(label, make_runner(runtime, path, spec, args.threads)) for label, (_, _, runtime, path) in labelled.items()]
    with active(runners):
        timings = interleaved_rounds(runners, batch, args.rounds, args.window)
    fp32 = {runtime: timings[label].per_round for label, (name, _, runtime, _) in labelled.items() if name == "fp32"}
    nncf = timings.get("nncf-default/cpu/openvino")
    out = []
    for label, timing in timings.items():
        name, target, runtime, _ = labelled[label]
        out.append(
            {
                "quantizer": name,
                "target": target,
                "runtime": runtime,
                "batch": args.batch,
                "rounds": args.rounds,
                "p50_ms": timing.p50_ms,
                "images_per_s": timing.images_per_s,
                "vs_ort_fp32": paired_ratio(timing.per_round, fp32["onnxruntime"]).to_dict(),
                "vs_same_fp32": paired_ratio(timing.per_round, fp32[runtime]).to_dict(),
                "vs_nncf_openvino": paired_ratio(timing.per_round, nncf.per_round).to_dict() if nncf else None,
            }
        )
    return out


def compare_with_peers(rows: list[dict[str, Any]], float_pred: np.ndarray, labels: np.ndarray) -> None:
    """Each of our rows gets ``vs_peers``: for every peer file of its target, our top-1 and our
    agreement minus the peer's, in points, with the exact 95% interval of the paired difference
    (the images where only one of the two is right, or agrees with the float model: McNemar's
    counts), so that "at least as good as the best peer" is judged by evidence, not by which point
    estimate of two indistinguishable files came out ahead."""
    from edge.measure.paired import paired_flips

    for ours in rows:
        if not ours["quantizer"].startswith("ours") or "_pred" not in ours:
            continue
        compared: dict[str, Any] = {}
        names, peer_target = PEERS[ours["target"]]
        for peer in rows:
            if peer["quantizer"] not in names or peer["target"] != peer_target or "_pred" not in peer:
                continue
            figures = {}
            for name, truth in (("top1", labels), ("agreement", float_pred)):
                # "drop" of ours relative to the peer: positive = the peer is right on more images
                flips = paired_flips(truth, peer["_pred"], ours["_pred"], confidence=TWO_SIDED)
                figures[name] = {
                    "diff": -flips.drop_points,
                    "interval": [-flips.drop_upper_points, -flips.drop_lower_points],
                    "only_ours": flips.gained,
                    "only_peer": flips.lost,
                }
            compared[peer["quantizer"]] = figures
        ours["vs_peers"] = compared


def _peer_verdict(ours: dict[str, Any], peer_rows: list[dict[str, Any]]) -> tuple[bool, str]:
    """Met unless a peer is significantly better (its paired interval wholly in its favour) on top-1
    or on agreement; falls back to the point estimates where the paired figures are missing."""
    best_drop = min(p["drop"] for p in peer_rows)
    best_agree = max(p["agreement"] for p in peer_rows)
    points = f"ours {ours['drop']:+.2f} / {ours['agreement']:.2f}%, best peer {best_drop:+.2f} / {best_agree:.2f}%"
    compared = ours.get("vs_peers")
    if not compared:
        return ours["drop"] <= best_drop and ours["agreement"] >= best_agree, points + " (point estimates)"
    worse = [
        f"{name} better on {what} by {-figures[what]['diff']:.2f} pts [{-figures[what]['interval'][1]:.2f}, {-figures[what]['interval'][0]:.2f}]"
        for name, figures in compared.items()
        for what in ("top1", "agreement")
        if figures[what]["interval"][1] < 0
    ]
    if worse:
        return False, points + "; " + "; ".join(worse)
    ahead = [
        f"ours better than {name} on {what}"
        for name, figures in compared.items()
        for what in ("top1", "agreement")
        if figures[what]["interval"][0] > 0
    ]
    return True, points + "; no peer significantly better (paired 95%)" + (f"; {', '.join(ahead)}" if ahead else "")


def judge_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 26 on this model: what was measured and whether it holds (None: not measurable)."""
    rows = {(r["quantizer"], r["target"]): r for r in figures["rows"] if "error" not in r}
    budget = MAX_DROP_VIT if figures["transformer"] else MAX_DROP_POINTS
    targets: list[dict[str, Any]] = []

    def add(name: str, met: bool | None, measured: str) -> None:
        targets.append({"target": name, "met": met, "measured": measured})

    for target in OUR_TARGETS:
        peer_names, peer_target = PEERS[target]
        ours = rows.get(("ours", target))
        if ours is None:
            add(f"{target}: ours quantized", False, "no file (see the error row)")
            continue
        add(
            f"{target}: accepted by edge quantize at defaults",
            ours["accepted"],
            "accepted" if ours["accepted"] else "not accepted",
        )
        add(f"{target}: drop <= {budget} pts", ours["drop"] <= budget, f"{ours['drop']:+.2f} pts on {ours['n']}")
        peer_rows = [rows[(p, peer_target)] for p in peer_names if (p, peer_target) in rows]
        if not peer_rows:
            add(f"{target}: >= best peer (drop, agreement)", None, "no peer measured")
        else:
            met, measured = _peer_verdict(ours, peer_rows)
            add(f"{target}: >= best peer (drop, agreement)", met, measured)
    for target in OUR_TARGETS:
        ptq = rows.get(("ours", target))
        if ptq is None or ptq["drop"] <= QAT_WHEN_DROP_OVER:
            continue
        qat = rows.get(("ours-qat", target))
        name = f"{target}: QAT recovers >= {QAT_MIN_RECOVERY:.0%} of the PTQ drop"
        if qat is None:
            add(name, None, f"PTQ drop {ptq['drop']:+.2f} pts > {QAT_WHEN_DROP_OVER}; QAT not measured (see its row)")
            continue
        recovered = (ptq["drop"] - qat["drop"]) / ptq["drop"]
        add(
            name,
            recovered >= QAT_MIN_RECOVERY,
            f"PTQ {ptq['drop']:+.2f} -> QAT {qat['drop']:+.2f} pts: {recovered:.0%} recovered",
        )
    speed = {(s["quantizer"], s.get("target", "cpu"), s["runtime"]): s for s in figures["speed"]}
    # our file for OpenVINO: the target-openvino one (older figures: the target-cpu file run there)
    ov = speed.get(("ours", "openvino", "openvino")) or speed.get(("ours", "cpu", "openvino"))
    name = f"{ov.get('target', 'cpu') if ov else 'openvino'}: >= NNCF default on OpenVINO"
    if ov is None or ov["vs_nncf_openvino"] is None:
        add(name, None, "not measured")
    else:
        ratio = ov["vs_nncf_openvino"]
        nncf_ms = next(s["p50_ms"] for s in figures["speed"] if s["quantizer"] == "nncf-default")
        # two files of the same kernels: "at least as fast" unless NNCF's is significantly faster
        # (the paired interval wholly below 1), as the accuracy comparisons with the peers are judged
        slower = ratio["high"] < 1.0
        add(
            name,
            not slower,
            f"{ratio['estimate']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}] ({ov['p50_ms']:.2f} vs {nncf_ms:.2f} ms)"
            + ("; NNCF's significantly faster" if slower else "; not significantly slower (paired 95%)"),
        )
    fastest = max(
        (s for s in figures["speed"] if s["quantizer"] == "ours"), key=lambda s: s["vs_ort_fp32"]["estimate"], default=None
    )
    need = MIN_SPEEDUP_RESNET50 if figures["model"] == "resnet50" else MIN_SPEEDUP
    name = f"cpu/openvino: >= {need:g}x ONNX Runtime FP32 (fastest path)"
    if fastest is None:
        add(name, None, "not measured")
    else:
        ratio = fastest["vs_ort_fp32"]
        fp32 = next(s["p50_ms"] for s in figures["speed"] if s["quantizer"] == "fp32" and s["runtime"] == "onnxruntime")
        add(
            name,
            ratio["estimate"] >= need,
            f"{ratio['estimate']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]: target-{fastest.get('target', 'cpu')} file "
            f"on {fastest['runtime']} ({fastest['p50_ms']:.2f} vs {fp32:.2f} ms per batch of {fastest['batch']})",
        )
    return targets


# ---- output ---------------------------------------------------------------------------------


def _interval(value: float, bounds: list[float], form: str) -> str:
    return f"{form.format(value)} [{form.format(bounds[0])}, {form.format(bounds[1])}]"


def print_model(console: Any, figures: dict[str, Any]) -> None:
    from edge.console import make_table

    recipe_used = figures["recipe"]
    table = make_table(
        "quantizer",
        "target",
        "runtime",
        "top-1 %",
        "drop pts",
        "agreement % (flips)",
        "float layers",
        "quantize s",
        title=f"{figures['model']}: {_recipe_text(recipe_used)}, from random init (no pretrained weights here); "
        f"{figures['test_count']} test images, 95% intervals; target trt simulated on the CPU (ONNX Runtime)",
    )
    for row in figures["rows"]:
        if "error" in row:
            table.add_row(row["quantizer"], row["target"] or "-", "-", row["error"], "", "", "", "")
            continue
        name = row["quantizer"] + ("" if row.get("accepted") is None else " (accepted)" if row["accepted"] else " (NOT accepted)")
        table.add_row(
            name,
            (row["target"] or "-") + (" (sim.)" if row.get("simulated") else ""),
            row.get("runtime", "-"),
            _interval(row["top1"], row["top1_interval"], "{:.2f}"),
            "-" if row["quantizer"] == "fp32" else _interval(row["drop"], row["drop_interval"], "{:+.2f}"),
            "-"
            if row["quantizer"] == "fp32"
            else f"{_interval(row['agreement'], row['agreement_interval'], '{:.2f}')} ({row['flips']})",
            "-" if row["quantizer"] == "fp32" else f"{row['float_layers']} of {row['weighted_layers']}",
            "-" if row.get("quantize_s") is None else f"{row['quantize_s']:.0f}",
        )
    console.print(table)
    speed = make_table(
        "file",
        "runtime",
        "p50 ms",
        "images/s",
        "x ORT FP32",
        "x same-runtime FP32",
        "x NNCF on OpenVINO",
        title=f"{figures['model']}: speed at batch {figures['speed'][0]['batch']}, {figures['speed'][0]['rounds']} interleaved "
        "rounds (median of per-round ratios, 95% interval); shared machine: noisy",
    )
    for cell in figures["speed"]:
        ratio = cell["vs_nncf_openvino"]
        speed.add_row(
            cell["quantizer"] + (f" ({cell['target']})" if cell.get("target") and cell["quantizer"] == "ours" else ""),
            cell["runtime"],
            f"{cell['p50_ms']:.2f}",
            f"{cell['images_per_s']:.0f}",
            _ratio(cell["vs_ort_fp32"]),
            _ratio(cell["vs_same_fp32"]),
            "-" if ratio is None or cell["runtime"] != "openvino" else _ratio(ratio),
        )
    console.print(speed)
    verdicts = make_table("target", "met", "measured", title=f"{figures['model']}: targets of issue 26")
    for item in figures["targets"]:
        verdicts.add_row(item["target"], {True: "yes", False: "NO", None: "n/a"}[item["met"]], item["measured"])
    console.print(verdicts)


def _ratio(ratio: dict[str, Any]) -> str:
    return f"{ratio['estimate']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]"


def save_figures(saved: Path, results: list[dict[str, Any]]) -> None:
    """One entry per model in ``saved``: these models' entries replaced, the others' kept (runs of
    other models, in parallel too: the file is locked while it is read and rewritten)."""
    import fcntl

    from edge.atomic import atomic_write_json

    with open(saved.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = json.loads(saved.read_text())["models"] if saved.exists() else []
        names = {r["model"] for r in results}
        atomic_write_json(saved, {"models": [m for m in kept if m.get("model") not in names] + results})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scripts.hard_models_benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="timm/torchvision model names")
    parser.add_argument("--epochs", type=int, help="training epochs of every model (default: its recipe)")
    parser.add_argument("--train-limit", type=int, help="training images of every model (default: its recipe)")
    parser.add_argument("--image-size", type=int, help="input size of every model (default: its recipe)")
    parser.add_argument("--test-limit", type=int, default=0, help="test images (default 0: the whole split, 10,000)")
    parser.add_argument("--work", default="runs/hard-models", help="where the runs live (default runs/hard-models)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a run with the same recipe exists")
    parser.add_argument("--report", action="store_true", help="only print the tables of WORK/hard_models.json again")
    parser.add_argument("--train-only", action="store_true", help="only train, export and calibrate the runs (for a later run)")
    parser.add_argument(
        "--max-drop", type=float, default=0.5, help="NNCF accuracy control's budget in points (default 0.5, ours)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=None, help="threads of training and of every runner (default: physical cores)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default 10)")
    parser.add_argument("--window", type=float, default=0.5, help="seconds per file and round (default 0.5)")
    parser.add_argument("--no-nncf", action="store_true", help="never run NNCF (its cached files are still shown)")
    parser.add_argument("--no-modelopt", action="store_true", help="never run Model Optimizer (a cached file is still shown)")
    parser.add_argument(
        "--reuse-ours",
        action="store_true",
        help="take our INT8 files (PTQ and QAT) this benchmark wrote before from the current model.onnx as they are "
        "(to re-measure speed or the peers without quantizing again)",
    )
    parser.add_argument(
        "--no-qat",
        action="store_true",
        help="never run edge quantize --qat (default: where PTQ drops > 0.5 pts or is not accepted)",
    )
    parser.add_argument("--modelopt-venv", default=".venv-modelopt", help="Model Optimizer's own venv (default .venv-modelopt)")
    parser.add_argument("--no-install", action="store_true", help="never create the Model Optimizer venv")
    args = parser.parse_args(argv)
    for name in ("epochs", "train_limit", "image_size", "batch", "rounds"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.test_limit < 0 or args.window <= 0 or args.max_drop < 0:
        parser.error("--test-limit and --max-drop must be >= 0 and --window positive")
    try:
        return _main(args)
    except UserError as exc:
        print(f"hard_models_benchmark: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from edge.console import make_console
    from train.models import check_image_size, zoo_entry

    for arch in args.models:  # every name and size checked before hours of work
        zoo_entry(arch)
        check_image_size(arch, recipe(arch, args)["image_size"])
    console = make_console(width=200)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.report:
        saved = work / "hard_models.json"
        if not saved.exists():
            raise UserError(f"{saved} does not exist: run the benchmark first")
        for figures in json.loads(saved.read_text())["models"]:
            if "error" in figures:
                print(f"{figures['model']}: error: {figures['error']}")
            elif figures["model"] in args.models or args.models == list(DEFAULT_MODELS):
                print_model(console, figures)
        return 0
    if args.train_only:
        for arch in args.models:
            train_run(arch, args, work)
        print(f"trained {len(args.models)} model(s) in {(time.perf_counter() - start) / 60:.1f} min")
        return 0
    results = []
    saved = work / "hard_models.json"
    for arch in args.models:
        try:
            figures = measure_model(arch, args, work)
        except UserError as exc:  # one model failing leaves its line, never loses the others
            print(f"{arch}: error: {exc}")
            figures = {"model": arch, "error": str(exc)}
        else:
            print_model(console, figures)
        results.append(figures)
        save_figures(saved, results)
    wall = time.perf_counter() - start
    met = [t["met"] for r in results if "targets" in r for t in r["targets"]]
    print(
        f"hard-models benchmark: {len(results)} model(s) in {wall / 60:.1f} min; targets met {met.count(True)}, "
        f"missed {met.count(False)}, not measured {met.count(None)}; figures in {saved}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
