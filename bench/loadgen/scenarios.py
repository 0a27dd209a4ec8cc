"""The four MLPerf Inference scenarios and LoadGen's ``TestSettings`` for each.

Performance runs use LoadGen's own defaults (its ``TestSettings()``: 10 s minimum duration, 100
queries at least, early stopping, SingleStream p90, MultiStream 8 samples a query and p99, Server
p99 under a 100 ms bound) unless a flag says otherwise; MLPerf's per-benchmark submission rules
(``mlperf.conf``: 600 s and more) are not applied. ``--quick`` shortens the minimum duration and
query count for CI, and the report carries whatever verdict LoadGen gives such a run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edge.errors import MissingDependencyError, UserError

SCENARIOS = {  # our name -> LoadGen's TestScenario
    "single-stream": "SingleStream",
    "multi-stream": "MultiStream",
    "offline": "Offline",
    "server": "Server",
}
MODES = ("performance", "accuracy", "both")
# --quick: enough queries for LoadGen to judge, in about a second a scenario (CI, tests)
QUICK = {"min_duration_ms": 300, "min_query_count": 32, "find_peak_decimals": 0}


def loadgen() -> Any:
    """The ``mlperf_loadgen`` module, or one line naming the install."""
    try:
        return importlib.import_module("mlperf_loadgen")
    except ImportError as exc:
        raise MissingDependencyError("mlcommons-loadgen", "loadgen", "MLPerf LoadGen scenarios (edge bench --scenario)") from exc


def parse_scenarios(values: list[str] | None) -> list[str]:
    """``--scenario`` given once or more, each a name or a comma list; 'all' is every scenario."""
    names: list[str] = []
    for value in values or []:
        for name in (v.strip() for v in value.split(",")):
            if name == "all":
                names += list(SCENARIOS)
            elif name in SCENARIOS:
                names.append(name)
            elif name:
                raise UserError(f"--scenario {name!r}: use {', '.join(SCENARIOS)} or all (repeat it or give a comma list)")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class ScenarioOptions:
    """What a scenario run asks of LoadGen beyond its defaults."""

    quick: bool = False
    latency_bound_ms: float | None = None  # Server: the p99 bound (LoadGen's default: 100 ms)
    server_qps: float | None = None  # Server: the Poisson arrival rate (performance mode)
    find_peak: bool = False  # Server: LoadGen's FindPeakPerformance instead of one rate
    expected_ms: float | None = None  # a batch-1 latency measured before (LoadGen's expected latency)
    expected_qps: float | None = None  # images/s measured before (LoadGen's offline expected QPS)
    min_duration_ms: int | None = None  # overrides (tests, the benchmark script)
    min_query_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def test_settings(scenario: str, accuracy: bool, options: ScenarioOptions) -> Any:
    """LoadGen's TestSettings for one run; every value not set here is LoadGen's default."""
    lg = loadgen()
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, SCENARIOS[scenario])
    if accuracy:
        settings.mode = lg.TestMode.AccuracyOnly
    elif scenario == "server" and options.find_peak:
        settings.mode = lg.TestMode.FindPeakPerformance
    else:
        settings.mode = lg.TestMode.PerformanceOnly
    if options.quick:
        settings.min_duration_ms = QUICK["min_duration_ms"]
        settings.min_query_count = QUICK["min_query_count"]
        settings.server_find_peak_qps_decimals_of_precision = QUICK["find_peak_decimals"]
    if options.min_duration_ms is not None:
        settings.min_duration_ms = options.min_duration_ms
    if options.min_query_count is not None:
        settings.min_query_count = options.min_query_count
    if options.expected_ms:
        settings.single_stream_expected_latency_ns = int(options.expected_ms * 1e6)
        settings.multi_stream_expected_latency_ns = int(options.expected_ms * 1e6 * settings.multi_stream_samples_per_query)
    if options.expected_qps:
        settings.offline_expected_qps = float(options.expected_qps)
    if options.latency_bound_ms is not None:
        settings.server_target_latency_ns = int(options.latency_bound_ms * 1e6)
    if options.server_qps:
        settings.server_target_qps = float(options.server_qps)
    return settings
