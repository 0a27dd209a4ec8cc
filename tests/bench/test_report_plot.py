"""report.png read back from matplotlib: measured batch sizes on the batch axes, an accuracy axis that
does not exaggerate, point labels inside the figure, plain latency ticks."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from bench.plots import MIN_ACCURACY_SPAN, report_figure  # noqa: E402
from tests.bench.test_gate import make_report  # noqa: E402


@pytest.fixture()
def axes():
    import matplotlib.pyplot as plt

    report = make_report(lost=1)  # int8 one image below its parent: 0.05 points apart
    fig = report_figure(report)
    fig.canvas.draw()
    yield fig, fig.axes
    plt.close(fig)


def test_batch_axes_show_the_measured_sizes(axes):
    _, (lat, thr, _) = axes
    for ax in (lat, thr):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "8"]


def test_the_accuracy_axis_spans_at_least_a_few_points(axes):
    _, (_, _, acc) = axes
    low, high = acc.get_ylim()
    assert high - low >= MIN_ACCURACY_SPAN
    assert low >= 0.0 and high <= 100.0
    assert "n = 2000 images" in acc.get_ylabel()


def test_point_labels_and_latency_ticks_stay_readable(axes):
    fig, (_, _, acc) = axes
    renderer = fig.canvas.get_renderer()
    figure_box = fig.bbox
    for text in acc.texts:
        box = text.get_window_extent(renderer)
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, text.get_text()
    labels = [t.get_text() for t in acc.get_xticklabels() if t.get_text()]
    assert labels and all("times" not in t and "^" not in t for t in labels)  # plain numbers, not 5.4x10^-1


def test_bar_panels_start_at_zero_write_values_and_say_n_a():
    import matplotlib.pyplot as plt

    from bench.plots import bar_panel

    fig, (linear, wide) = plt.subplots(1, 2)
    bar_panel(linear, ["a", "b", "c"], [1.27, None, 0.45], "p50 at batch 1 (ms)")
    assert linear.get_xlim()[0] == 0.0 and linear.get_xscale() == "linear"
    assert [t.get_text() for t in linear.texts] == ["1.27", "n/a", "0.45"]
    bar_panel(wide, ["gpu", "cpu"], [0.5, 120.0], "p50")  # 240x apart: dots on a log axis, no bars
    assert wide.get_xscale() == "log" and not wide.patches and "log scale" in wide.get_title()
    plt.close(fig)
