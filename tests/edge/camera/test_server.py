"""The --serve page answers only Host headers that name it, unless public (issue 25: DNS rebinding)."""

from __future__ import annotations

import http.client

import pytest

from edge.camera.server import StreamServer


def _status(server: StreamServer, host: str | None, path: str = "/stats.json") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.putrequest("GET", path, skip_host=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.fixture()
def loopback():
    server = StreamServer("127.0.0.1", 0)
    yield server
    server.close()


def test_a_loopback_page_answers_its_own_names(loopback):
    port = loopback.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "localhost", f"[::1]:{port}"):
        assert _status(loopback, host) == 200, host


def test_a_loopback_page_refuses_other_hosts(loopback):
    port = loopback.port
    for host in (f"rebind.example:{port}", "attacker.test", f"127.0.0.1:{port + 1}", None, ""):
        assert _status(loopback, host) == 403, host
    assert _status(loopback, "rebind.example", "/stream.mjpg") == 403  # the stream itself too


def test_public_or_a_non_loopback_address_answers_any_host():
    public = StreamServer("127.0.0.1", 0, public=True)
    try:
        assert _status(public, "camera.example:80") == 200
    finally:
        public.close()
    everywhere = StreamServer("0.0.0.0", 0)
    try:
        assert everywhere.any_host and _status(everywhere, "jetson.local:8080") == 200
    finally:
        everywhere.close()
