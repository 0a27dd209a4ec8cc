"""Experiment tracking with MLflow: every stage's results, found again later.

A stage (``edge train``, ``edge quantize``, ``edge bench``, ``edge check``) writes its files as
always; with ``--track`` (or ``EDGE_TRACKING=mlflow``, or whenever ``MLFLOW_TRACKING_URI`` is set) a
hook called after those files are written reads them back and logs one MLflow run for the stage,
nested under a parent run named after the run directory. Nothing here threads state through a
stage: what is logged is what the stage's manifests and reports hold.

- :mod:`edge.tracking.options`: the shared flags and when tracking is on;
- :mod:`edge.tracking.records`: what each stage's files say, as params, metrics, tags and artifacts;
- :mod:`edge.tracking.store`: the MLflow glue (experiment, parent and stage runs, a bounded deadline);
- :mod:`edge.tracking.hook`: ``check_tracking`` (before the work) and ``track_stage`` (after it);
- :mod:`edge.tracking.readback`: reading runs back (``edge runs``, ``edge compare RUN_ID``);
- :mod:`edge.tracking.runs`: the ``edge runs`` command.

mlflow is an optional package (the ``tracking`` extra) imported inside functions only.
"""

from edge.tracking.hook import check_tracking, track_stage
from edge.tracking.options import add_tracking_arguments

__all__ = ["add_tracking_arguments", "check_tracking", "track_stage"]
