"""bench: latency / throughput / accuracy measurement, reports, comparison and the CI gate.

Modules, in the order a bench run uses them:

- ``cli``     — ``edge bench``: arguments, profiles (full, demo), the evaluation plan; runs the matrix
- ``matrix``  — every artifact of a run x every device, one worker process per row, with a timeout;
  each row's drop, agreement and paired flips against its float parent
- ``worker``  — one row in its own process (``python -m bench.worker JOB.json RESULT.json``): timing
  cells per batch size, single stream, accuracy
- ``host``    — what this host can run (``unavailable_reason``, ``Skip``) and a row's ``peak_memory``,
  shared by the worker's artifact rows and the zoo's model rows
- ``timing``  — the timing window and loop: warm up, then at least N calls and T seconds, no clipping
- ``power``   — board power during a cell (NVML or tegrastats), energy per image
- ``paired``  — paired top-1 flips against a reference and their exact (McNemar) bounds, in points
- ``report``  — ``report.{json,md,csv,png}`` under ``RUN/bench/`` and the rich tables in the terminal
- ``gate``    — ``edge check``: fail on accuracy drops and latency regressions, with confidence bounds
- ``zoo``     — ``edge bench --zoo``: params, GMACs, published top-1 and latency of zoo architectures
- ``scripts/`` — standalone measurement scripts (``python -m bench.scripts.<name>``) that print the
  figures the README quotes; not part of ``edge bench``

Accuracy figures (top-1, top-5, drop, agreement) are percentages (0-100) everywhere. From ``train``,
bench uses only the data sources (``train.data``) and the model zoo (``train.models``).
"""
