"""Measurement, once, below every stage that measures.

- ``timing``: warm-up and timed windows, timing rounds and their order, the round timer, the
  interleaved timing of several runners, the machine-noise figures (other processes' CPU share).
- ``intervals``: distribution-free intervals for rounds (a median, a paired ratio, new/old across runs)
  and the confidence floor below which a latency verdict is not given.
- ``paired``: paired top-1 flips against a reference and their exact bounds, the binomial.
- ``acceptance``: the one rule that accepts or fails an INT8 model's drop and agreement, used by
  ``edge quantize`` and ``edge check`` alike, and the evaluation-set size that resolves a budget.
- ``report``: the bench report schema, its reader and validator, and row/cell statuses.
- ``rows``: the artifact (row) names of a run, their float parents, and which rows are exact
  conversions or simulated.

Nothing here imports a stage: quantize, selftest, bench, the gate, compare, ``edge triton`` and the
benchmark scripts all measure through these modules.
"""
