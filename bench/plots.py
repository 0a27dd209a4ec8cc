"""The bench's pictures: ``report.png`` (latency and throughput against batch size, accuracy against
latency), and the bar panels ``edge compare`` and the zoo draw. Needs matplotlib (the ``train``
extra); :func:`plot_unavailable` says why there is no picture on a device installed without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.measure.rows import ok_cell


def plot_unavailable() -> str | None:
    """Why ``report.png`` cannot be drawn here (a note for the user), or None where matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "matplotlib").split(".")[0] == "matplotlib":
            return "report.png not written: it needs matplotlib, which is not installed (pip install matplotlib, or the `train` extra)"
        return f"report.png not written: matplotlib cannot be imported ({exc}): pip install --force-reinstall matplotlib"
    except ImportError as exc:
        return f"report.png not written: matplotlib cannot be imported ({exc}): pip install --force-reinstall matplotlib"
    return None


def bar_panel(ax: Any, labels: list[str], values: list[float | None], title: str) -> None:
    """Bars from zero on a linear axis with each value written (n/a where missing); when the values
    span more than 30x (a GPU beside a CPU), dots on a log axis instead: a bar on a log axis has
    no honest length."""
    from matplotlib.ticker import ScalarFormatter

    y = list(range(len(labels)))
    present = [v for v in values if v is not None and v > 0]
    wide = bool(present) and max(present) / min(present) > 30
    if wide:
        ax.plot([v if v else float("nan") for v in values], y, "o")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
    else:
        ax.barh(y, [v or 0.0 for v in values])
        ax.set_xlim(0, max(present or [1.0]) * 1.25)
    for yi, value in zip(y, values):
        text = "n/a" if value is None else (f"{value:.3g}" if value < 1000 else f"{value:.0f}")
        ax.annotate(
            text,
            (value or (min(present) if wide and present else 0.0), yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, labels)
    ax.set_title(title + (" (log scale)" if wide else ""))
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)


MIN_ACCURACY_SPAN = 5.0  # points: an accuracy axis never spans less, so one image is not a cliff


def render_png(report: dict[str, Any], path: Path) -> None:
    """Latency and throughput against batch size per artifact x device, and accuracy against latency,
    drawn into ``path`` (``write_report`` passes its staged temporary file). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = report_figure(report)
    try:
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def report_figure(report: dict[str, Any]) -> Any:
    """The figure of ``render_png`` (tests read its ticks and limits back)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    fig, (ax_lat, ax_thr, ax_acc) = plt.subplots(1, 3, figsize=(16, 5.0))
    measured_batches: set[int] = set()
    for row in report["rows"]:
        cells = [c for c in row.get("cells", []) if c.get("status") == "ok"]
        if not cells:
            continue
        label = f"{row['artifact']} ({row['device']})"
        batches = [c["batch"] for c in cells]
        measured_batches.update(batches)
        ax_lat.plot(batches, [c["compute"]["p50_ms"] for c in cells], marker="o", label=label)
        ax_thr.plot(batches, [c["compute"]["items_per_s"] for c in cells], marker="o", label=label)
    for ax, title, ylabel in ((ax_lat, "p50 latency per batch", "ms (log)"), (ax_thr, "throughput", "images/s (log)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # backends differ by orders of magnitude
        ax.xaxis.set_major_locator(FixedLocator(sorted(measured_batches) or [1]))  # the measured sizes, not 2^k
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    colours = {line.get_label(): line.get_color() for line in ax_lat.get_lines()}
    _accuracy_panel(ax_acc, report, colours)
    if ax_thr.get_legend_handles_labels()[0]:  # nothing timed (all rows skipped, errored or interrupted): no legend
        ax_thr.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _accuracy_panel(ax: Any, report: dict[str, Any], colours: dict[str, str]) -> None:
    """Top-1 against p50 at the smallest batch: a linear latency axis with plain ticks, labels kept
    inside the axes, and a top-1 axis of at least MIN_ACCURACY_SPAN points with the eval count said."""
    small = min(report["settings"]["batch_sizes"])
    points = []
    for row in report["rows"]:
        cell = ok_cell(row, small)
        top1 = (row.get("accuracy") or {}).get("top1")
        if cell is not None and top1 is not None:
            points.append((cell["compute"]["p50_ms"], top1, f"{row['artifact']} ({row['device']})"))
    for i, (x, y, label) in enumerate(sorted(points)):
        ax.scatter([x], [y], color=colours.get(label))
        offset = (4, 6) if i % 2 == 0 else (4, -12)  # neighbours alternate above and below their point
        ax.annotate(label, (x, y), xytext=offset, textcoords="offset points", fontsize=8, annotation_clip=True)
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.set_xlim(0, max(xs) * 1.35)  # room on the right for the labels
        middle, span = (max(ys) + min(ys)) / 2, max(max(ys) - min(ys), MIN_ACCURACY_SPAN)
        low = max(0.0, middle - span * 0.6)
        ax.set_ylim(low, min(100.0, low + span * 1.2))
    n = (report.get("eval") or {}).get("count")
    ax.set_xlabel(f"p50 latency at batch {small} (ms)")
    ax.set_ylabel(f"top-1 % (n = {n} images)" if n else "top-1 %")
    ax.set_title("accuracy vs latency")
    ax.grid(True, alpha=0.3)
