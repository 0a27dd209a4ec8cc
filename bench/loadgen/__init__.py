"""MLPerf Inference scenarios through the real LoadGen (PyPI ``mlcommons-loadgen``, ``mlperf_loadgen``).

LoadGen schedules the queries, times them and judges the run (minimum duration and query count,
early stopping, the latency bound); this package is only the glue around it:

- ``scenarios``: the four scenarios, LoadGen's ``TestSettings`` for each (its own defaults, or
  ``--quick``'s shorter ones), the optional-dependency check;
- ``library``: the query-sample library, the pinned test split preprocessed into memory (as many
  samples as fit a memory budget);
- ``suts``: one system-under-test per runner (SingleStream one sample a query; MultiStream and
  Offline batch a query's samples; Server batches what is queued as queries arrive) and one per
  Triton endpoint (``remote``);
- ``logs``: reading LoadGen's own ``mlperf_log_detail.txt`` and accuracy log into report fields;
- ``runner``: one scenario run (performance or accuracy) with its logs kept under
  ``RUN/bench/loadgen/<artifact>/<scenario>/``; ``job``: one artifact's scenarios in a worker process.

Every page that shows these figures says :data:`NOT_AUDITED` (the report schema's note; the tables
are ``bench.scenario_tables``).
"""

from edge.measure.report import SCENARIO_NOTE as NOT_AUDITED

__all__ = ["NOT_AUDITED"]
