"""bench: latency / throughput / accuracy measurement, reports, comparison and the CI gate."""
