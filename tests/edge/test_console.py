"""Plain output: every table of the CLI at 80 columns on a non-terminal keeps every cell whole;
COLUMNS and NO_COLOR are honoured; progress shows as log lines where a live bar would print nothing."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from edge.console import LOG_EVERY_S, FittedTable, LogProgress, make_console, make_progress, make_table, track

ANSI = re.compile(r"\x1b\[[0-9;]*m")
QUANTIZE_LIKE = ("method", "top-1", "float top-1", "drop (points)", "agreement", "top-5", "images", "size", "accepted")
QUANTIZE_ROW = ("minmax +3 float", "91.20%", "91.40%", "0.20", "99.10% (9 flips)", "99.80%", "1000 test", "3.80x", "yes")


@pytest.fixture
def plain_stdout(monkeypatch):
    """stdout as CI and ``| tee`` see it: not a terminal, no COLUMNS, no colour forced."""
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def _printed(table, capsys) -> str:
    console = make_console()
    assert not console.is_terminal and console.width == 80
    console.print(table)
    return capsys.readouterr().out


def _assert_whole(table: FittedTable, text: str, width: int = 80) -> None:
    """No cell cut: no ellipsis, no line over the width, every word of every header and cell printed whole."""
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    words = set(re.split(r"[\s│┃]+", text))
    for column in table.columns:
        for cell in [column.header, *column.cells] if table.show_header else column.cells:
            plain = Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)
            for word in plain.split():
                assert word in words, f"{word!r} of {plain!r} is not printed whole"


def _export_table(tmp_path: Path):
    from edge.export import export_table

    manifest = SimpleNamespace(
        provenance={"exporter": "dynamo", "opset": 18},
        metrics={"verify_count": 256, "verify_source": "val", "verify_max_abs_diff": 3.1e-6, "verify_top1_agreement": 100.0},
        size_bytes=13_400_000,
    )
    return export_table(Path("runs/imagenet-lite0/model.onnx"), manifest)


def _engines_table(tmp_path: Path):
    from edge.tensorrt.cli import engines_table

    row = {
        "precision": "int8",
        "engine": "runs/demo/engines/NVIDIA-H200-sm90-trt10.13/int8.engine",
        "size_mb": 5.1,
        "build_flags": ["INT8", "FP16"],
        "network_flags": ["STRONGLY_TYPED"],
        "profile": {"min": 1, "opt": 8, "max": 32},
        "build_seconds": 41.7,
    }
    return engines_table([row, {**row, "precision": "fp16", "build_flags": ["FP16"], "network_flags": []}])


def _calibration_table(tmp_path: Path):
    from calibration.cli import calibration_table

    class Calib(SimpleNamespace):
        def __len__(self) -> int:
            return 512

    provenance = {"requested": 512, "split": "train", "seed": 0, "class_counts": {str(i): 51 + i % 2 for i in range(10)}}
    return calibration_table(
        Calib(path=Path("runs/demo/calibration/calibration.npy"), provenance=provenance, content_hash="ab" * 32)
    )


def _selftest_table(tmp_path: Path):
    from edge.selftest import selftest_table

    rows = [
        {"precision": "fp16", "status": "ok", "max_abs_diff_vs_ort": 2.4e-3, "top1_agreement_vs_ort": 100.0, "host_p50_ms": 1.21},
        {"precision": "int8", "status": "FAIL: top-1 agreement 97% < 99% [engine]", "host_p50_ms": None},
    ]
    return selftest_table({"passed": False, "note": "NVIDIA H200, TensorRT 10.13", "rows": rows})


def _training_table(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from train.report import history_table

    history = [
        {
            "epoch": e,
            "lr": 1e-3 / e,
            "train_loss": 0.6,
            "train_top1": 90.12,
            "val_loss": 0.29,
            "val_top1": 91.2,
            "val_top5": 99.71,
            "images_per_s": 1234.0,
            "epoch_s": 61.0,
        }
        for e in (1, 2, 3)
    ]
    return history_table(history, best_epoch=3)


# the demo's edge quantize --target cpu --method auto, with a float layer kept to make the widest rows
QUANTIZE_PROVENANCE = {
    "val_set": "fashion-mnist:val",
    "val_count": 2000,
    "chosen_method": "entropy",
    "nodes_excluded": ["/blocks/blocks.5/blocks.5.0/conv_pwl/Conv"],
    "layer_report": "model.int8-cpu.layers.json",
    "tries": [
        {"method": "minmax", "excluded": [], "top1": 92.95, "drop_points": -0.2, "agreement": 99.2, "speedup": 2.003},
        {"method": "entropy", "excluded": [], "top1": 92.7, "drop_points": 0.05, "agreement": 98.95},
        {
            "method": "entropy",
            "excluded": ["/blocks/blocks.5/blocks.5.0/conv_pwl/Conv"],
            "top1": 92.9,
            "drop_points": -0.15,
            "agreement": 99.35,
            "speedup": 1.871,
        },
        {"method": "percentile", "excluded": [], "top1": None, "drop_points": None, "agreement": 97.5},
    ],
}
QUANTIZE_METRICS = {
    "accepted": False,
    "agreement": 98.9,
    "flips": 11,
    "top1": 92.0,
    "parent_top1": 92.1,
    "drop_points": 0.1,
    "top5": 99.7,
    "eval_count": 1000,
    "eval_source": "fashion-mnist:test",
    "size_ratio": 0.2861588151421777,
    "simulated": True,
}


def _run_table(tmp_path: Path):
    from train.report import run_table

    test = {"top1": 91.2, "top5": 99.71, "images": 10000}
    return run_table(Path("runs/demo"), best_epoch=3, best_top1=91.2, val_images=5000, test=test, skipped=1)


def _tries_table(tmp_path: Path):
    from edge.quantize.cli import tries_table

    return tries_table(QUANTIZE_PROVENANCE)


def _worst_layers_table(tmp_path: Path):
    from edge.quantize.cli import worst_layers_table

    layers = [
        {"tensor": "getitem_6", "producer": "node_Conv_777", "producer_op": "Conv", "loss_db": 8.57, "xmodel_err_db": 28.63},
        {
            "tensor": "/blocks/blocks.5/blocks.5.0/conv_pwl/Conv_output_0",
            "producer": "/blocks/blocks.5/blocks.5.0/conv_pwl/Conv",
            "producer_op": "Conv",
            "loss_db": 7.04,
            "xmodel_err_db": 20.57,
        },
        *(
            {
                "tensor": f"getitem_{i}",
                "producer": f"node_Conv_{800 + i}",
                "producer_op": "Conv",
                "loss_db": 1.0 / i,
                "xmodel_err_db": 19.0,
            }
            for i in range(1, 12)
        ),
    ]
    (tmp_path / "model.int8-cpu.layers.json").write_text(json.dumps({"layers": layers}))
    return worst_layers_table(tmp_path / "model.int8-cpu.onnx", QUANTIZE_PROVENANCE)


def _result_table(tmp_path: Path):
    from edge.quantize.cli import result_table

    return result_table(Path("runs/imagenet-lite0/model.int8-trt.onnx"), QUANTIZE_PROVENANCE, QUANTIZE_METRICS)


def _bench_table(tmp_path: Path):
    from bench.report import rich_headline
    from tests.bench.test_gate import make_report

    report = make_report()
    report["rows"][-1]["reason"] = "no CUDA device (torch.cuda.is_available() is False)"
    return rich_headline(report, title="bench: runs/demo (demo)").renderables[0]


def _gate_table(tmp_path: Path):
    from bench.gate import evaluate_gate, gate_table
    from tests.bench.test_gate import make_report

    return gate_table(evaluate_gate(make_report(lost=40), make_report(), 0.5, 10.0), "edge check: runs/demo/bench/report.json")


def _zoo_table(tmp_path: Path):
    from bench.zoo import zoo_rich_table, zoo_table

    cells = [{"batch": b, "compute": {"p50_ms": 12.5 * b, "items_per_s": 80.0}} for b in (1, 8, 32)]
    row = {"arch": "efficientnet_b4", "device": "cpu", "status": "ok", "params": 19.3e6, "macs": 1.5e9, "imagenet_top1": 83.4}
    row |= {"input_size": 380, "cells": cells, "peak_rss_mib": 900.0}
    return zoo_rich_table(*zoo_table([row], [1, 8, 32]))


@pytest.mark.parametrize(
    "build",
    [
        _bench_table,
        _gate_table,
        _zoo_table,
        _export_table,
        _engines_table,
        _calibration_table,
        _selftest_table,
        _training_table,
        _run_table,
        _tries_table,
        _worst_layers_table,
        _result_table,
    ],
)
def test_every_table_keeps_every_cell_at_80_columns(build, plain_stdout, capsys, tmp_path):
    table = build(tmp_path)
    assert isinstance(table, FittedTable)
    _assert_whole(table, _printed(table, capsys))


def test_the_training_table_shows_the_learning_rate_whole(plain_stdout, capsys, tmp_path):
    text = _printed(_training_table(tmp_path), capsys)
    assert "1.00e-03" in text and "3.33e-04" in text


def _quantize_like(rows: int = 1) -> FittedTable:
    table = make_table(*QUANTIZE_LIKE, title="runs/demo/model.int8-cpu.onnx (simulated on ONNX Runtime CPU)")
    for _ in range(rows):
        table.add_row(*QUANTIZE_ROW)
    return table


@pytest.mark.parametrize("width", [40, 60, 80, 100, 140])
def test_a_wide_table_wraps_or_turns_into_records_but_never_cuts(width):
    table = _quantize_like(rows=2)
    console = Console(file=io.StringIO(), width=width)
    console.print(table)
    _assert_whole(table, console.file.getvalue(), width)


def test_the_layouts_by_width():
    def render(width: int) -> str:
        console = Console(file=io.StringIO(), width=width)
        console.print(_quantize_like())
        return console.file.getvalue()

    assert "┃ method          ┃ top-1  ┃" in render(140)  # room for everything: the table as it is
    assert "┃ drop (points) ┃" not in render(100) and "┃" in render(100)  # headers wrap on words
    compact = render(80)
    assert "┃" not in compact and re.search(r"^method +top-1 ", compact, re.M)  # one space between columns
    records = render(40)
    assert re.search(r"^drop \(points\) +0\.20 *$", records, re.M) and re.search(r"^accepted +yes *$", records, re.M)


def test_a_table_printed_twice_keeps_its_own_layout():
    table = _quantize_like()
    narrow, wide = Console(file=io.StringIO(), width=40), Console(file=io.StringIO(), width=140)
    narrow.print(table)
    wide.print(table)
    assert "┃ method          ┃ top-1  ┃" in wide.file.getvalue()
    assert all(column.width is None for column in table.columns) and table.box is not None


def test_columns_is_honoured(plain_stdout, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "140")
    console = make_console()
    assert console.width == 140
    console.print(_quantize_like())
    text = capsys.readouterr().out
    assert "┃ method          ┃ top-1  ┃" in text
    monkeypatch.setenv("COLUMNS", "50")
    assert make_console().width == 50


def test_no_color_is_honoured(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = make_console()
    with coloured.capture() as capture:
        coloured.print("[red]FAIL[/red]")
    assert "\x1b[31m" in capture.get()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = make_console()
    with plain.capture() as capture:
        plain.print("[red]FAIL[/red]")
    assert "FAIL" in capture.get() and "\x1b[31m" not in capture.get()


def test_a_non_terminal_gets_no_escape_codes(plain_stdout, capsys):
    make_console().print("[bold red]FAIL[/bold red]")
    assert capsys.readouterr().out == "FAIL\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_log_lines_when_not_a_terminal(plain_stdout, capsys):
    progress = make_progress(unit="rows")
    assert isinstance(progress, LogProgress)
    clock = progress._clock = FakeClock()  # type: ignore[assignment]
    with progress:
        task = progress.add_task("bench matrix", total=8)
        for _ in range(3):
            clock.now += 13.7
            progress.update(task, advance=1, status="row ok")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "bench matrix: 1/8 rows, 14 s, row ok",
        "bench matrix: 2/8 rows, 27 s, row ok",
        "bench matrix: 3/8 rows, 41 s, row ok",
    ]


def test_log_progress_prints_every_tenth_and_the_end():
    out = io.StringIO()
    clock = FakeClock()
    progress = LogProgress(Console(file=out, width=80), unit="images", clock=clock)
    with progress:
        for _ in progress.track(range(95), description="calibration"):
            pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "calibration: 10/95 images, 0 s"
    assert lines[-1] == "calibration: 95/95 images, 0 s"
    assert len(lines) == 10


def test_log_progress_speaks_after_ten_seconds_without_a_tenth_done():
    out = io.StringIO()
    clock = FakeClock()
    progress = LogProgress(Console(file=out, width=80), clock=clock)
    task = progress.add_task("epoch 1/3", total=1000)
    progress.update(task, completed=1)
    assert out.getvalue() == ""
    clock.now += LOG_EVERY_S
    progress.update(task, completed=2)
    assert out.getvalue() == "epoch 1/3: 2/1000, 10 s\n"
    clock.now += 60
    progress.update(task, completed=2)  # no progress, no line
    progress.remove_task(task)
    assert out.getvalue() == "epoch 1/3: 2/1000, 10 s\n"


def test_a_terminal_gets_the_live_bar(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert isinstance(make_progress(), Progress)
    monkeypatch.delenv("FORCE_COLOR")
    assert isinstance(make_progress(console=Console(file=io.StringIO())), LogProgress)


def test_track_logs_when_not_a_terminal():
    out = io.StringIO()
    assert list(track(range(20), "preprocessing fashion-mnist:test", console=Console(file=out), unit="images")) == list(range(20))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("preprocessing fashion-mnist:test: 2/20 images, ")
    assert lines[-1].startswith("preprocessing fashion-mnist:test: 20/20 images, ") and len(lines) == 10
