"""The MLflow glue (edge/tracking/store.py): a tracking failure in a few words (the failures themselves,
refused and silent servers, are in tests/bench/test_tracking.py)."""

from __future__ import annotations

from edge.tracking.store import failure_line


def test_a_tracking_failure_reads_as_a_few_words():
    refused = ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Caused by "
        "NewConnectionError('<urllib3.connection.HTTPConnection>: Failed to establish a new "
        "connection: [Errno 111] Connection refused'))"
    )
    assert failure_line(refused) == "connection refused"
    assert failure_line(TimeoutError("HTTPConnectionPool: Read timed out. (read timeout=10)")).startswith(
        "the server did not answer in time"
    )
    assert failure_line(RuntimeError("x" * 500)) == "x" * 200
