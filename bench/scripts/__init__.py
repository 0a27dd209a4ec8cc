"""Standalone measurement scripts, each run as ``python -m bench.scripts.<name>``.

They print figures the README quotes (camera vs batch-1 throughput, bench overhead vs a bare
session loop, INT8 method comparison, the CUDA/TensorRT device check); none is part of
`edge bench` or the CI gate.
"""
