"""curves.png tells the truth: comparable losses said in the legend, integer epochs, accuracy axes that
do not exaggerate, nothing clipped. The figure is read back from matplotlib, not from pixels."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from train.report import MIN_TOP1_SPAN, curves_figure, plot_curves, top1_limits  # noqa: E402


def _history(train_top1=(86.0, 89.5, 90.1), val_top1=(89.9, 91.0, 91.2), **extra):
    rows = []
    for i, (train, val) in enumerate(zip(train_top1, val_top1)):
        row = {"epoch": i + 1, "train_loss": 0.75 - 0.07 * i, "val_loss": 0.35 - 0.03 * i, "train_top1": train, "val_top1": val}
        row.update({key: values[i] for key, values in extra.items()})
        rows.append(row)
    return rows


def _legend(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def test_the_legend_says_which_loss_carries_label_smoothing():
    fig = curves_figure(_history(), best_epoch=3, label_smoothing=0.1)
    loss_ax = fig.axes[0]
    assert _legend(loss_ax)[:2] == ["train loss (label smoothing 0.1)", "val loss (no smoothing)"]
    assert list(loss_ax.lines[0].get_ydata()) == pytest.approx([0.75, 0.68, 0.61])


def test_a_plain_training_loss_is_plotted_against_the_plain_validation_loss():
    fig = curves_figure(_history(train_loss_plain=(0.40, 0.31, 0.27)), label_smoothing=0.1)
    loss_ax = fig.axes[0]
    assert _legend(loss_ax) == ["train loss (no smoothing)", "val loss (no smoothing)"]
    assert list(loss_ax.lines[0].get_ydata()) == pytest.approx([0.40, 0.31, 0.27])


def test_unknown_smoothing_is_not_called_plain():
    fig = curves_figure(_history())
    assert "no smoothing" not in _legend(fig.axes[0])[0]
    assert "label smoothing 0.2" in _legend(curves_figure(_history(label_smoothing=(0.2,) * 3)).axes[0])[0]


@pytest.mark.parametrize("epochs", [1, 3, 12])
def test_epoch_ticks_are_whole_epochs(epochs):
    fig = curves_figure(_history(train_top1=[80.0 + i for i in range(epochs)], val_top1=[81.0 + i for i in range(epochs)]))
    _drawn(fig)
    for ax in fig.axes:
        low, high = ax.get_xlim()
        shown = [tick for tick in ax.get_xticks() if low <= tick <= high]
        assert shown and all(float(tick).is_integer() for tick in shown)
        labels = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
        assert labels and all(label.lstrip("−-").isdigit() for label in labels)


def _shown_ticklabels(ax):
    """The tick labels inside the axes' limits (matplotlib keeps labels for ticks beyond them, undrawn)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xs = [label for label in ax.get_xticklabels() if x0 <= label.get_position()[0] <= x1]
    ys = [label for label in ax.get_yticklabels() if y0 <= label.get_position()[1] <= y1]
    assert xs and ys
    return xs + ys


def test_a_tenth_of_a_point_does_not_look_like_a_cliff():
    fig = curves_figure(_history(train_top1=(91.20, 91.21, 91.22), val_top1=(91.22, 91.24, 91.25)))
    low, high = fig.axes[1].get_ylim()
    assert high - low >= MIN_TOP1_SPAN
    assert low <= 91.20 and high >= 91.25


def test_accuracy_limits_stay_within_percentages():
    assert top1_limits([99.9, 100.0]) == pytest.approx((95.0, 100.0))
    assert top1_limits([0.0, 0.5]) == pytest.approx((0.0, 5.0))
    low, high = top1_limits([50.0, 90.0])
    assert low < 50.0 and high > 90.0 and high - low == pytest.approx(48.0)
    assert top1_limits([]) == (0.0, 100.0)


def test_no_label_is_clipped():
    fig = curves_figure(_history(), best_epoch=2, label_smoothing=0.1)
    renderer = _drawn(fig)
    page = fig.bbox
    for ax in fig.axes:
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label, ax.get_legend(), *_shown_ticklabels(ax)]
        for text in texts:
            box = text.get_window_extent(renderer)
            if box.width == 0:
                continue
            assert page.x0 - 0.5 <= box.x0 and box.x1 <= page.x1 + 0.5, text
            assert page.y0 - 0.5 <= box.y0 and box.y1 <= page.y1 + 0.5, text


def test_plot_curves_writes_a_png(tmp_path):
    path = plot_curves(tmp_path / "curves.png", _history(), best_epoch=3, label_smoothing=0.1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_metrics_csv_gains_the_plain_training_loss_only_where_recorded(tmp_path):
    from train.report import write_metrics

    rows = [dict(row, lr=1e-3, val_top5=99.0) for row in _history()]
    csv_path, _ = write_metrics(tmp_path, rows)
    assert csv_path.read_text().splitlines()[0].startswith("epoch,lr,train_loss,train_top1,")
    csv_path, _ = write_metrics(tmp_path, [dict(row, train_loss_plain=0.3) for row in rows])
    header, first = csv_path.read_text().splitlines()[:2]
    assert header.startswith("epoch,lr,train_loss,train_loss_plain,train_top1,")
    assert first.split(",")[3] == "0.3"
