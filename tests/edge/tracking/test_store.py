"""The MLflow glue (edge/tracking/store.py): a tracking failure in a few words (the failures themselves,
refused and silent servers, are in tests/bench/test_tracking.py)."""

from __future__ import annotations

from edge.tracking.store import _batches, failure_line


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


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def log_batch(self, run_id, metrics, params, tags):
        self.calls.append((len(metrics), len(params), len(tags)))


def test_a_large_record_goes_out_in_batches_within_mlflows_limits():
    client = _Recorder()
    _batches(client, "run", params=list(range(250)), metrics=list(range(2500)), tags=list(range(150)))
    assert all(p <= 100 and t <= 100 and m + p + t <= 1000 for m, p, t in client.calls)
    assert [sum(call[i] for call in client.calls) for i in range(3)] == [2500, 250, 150]
