"""The INT8 figures script refuses bad input with one line and exit 2 (its figures are not tested here)."""

from __future__ import annotations

import pytest

from bench.scripts.quantize_benchmark import main


@pytest.mark.parametrize("flag", ["--rounds", "--window", "--batch"])
def test_non_positive_timing_options_are_refused(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([flag, "0", "--skip-rss", "--skip-accuracy"])
    assert exit_info.value.code == 2
    assert f"{flag} must be positive, got 0" in capsys.readouterr().err


def test_missing_run_is_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope"), "--skip-rss"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("quantize_benchmark: error: run directory") and "does not exist" in err[0]
