"""The OPA sidecar client's transport against a real OPA behind a TCP relay
that counts and cuts connections: one kept-alive connection serves every
decision, a connection the far end closed is replaced without failing the
call, and a sidecar that stops answering is a timeout (so BLOCK), fast."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from enforcer.config import OpaConfig
from enforcer.errors import EngineUnavailable
from enforcer.policy.opa import OpaEngine
from tests.policy.opa_helpers import ALLOW, MAIN, build, call, write_rego


class Relay:
    """TCP relay to a port: counts connections; cut() closes them all;
    mute=True accepts and reads but never forwards (a hung sidecar)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.accepted = 0
        self.mute = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(client)
            if self.mute:
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _swallow(s: socket.socket) -> None:
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.cut()
        self._server.close()


@pytest.fixture
def relay(sidecar):
    r = Relay(sidecar.port)
    yield r
    r.close()


def engine_for(tmp_path, port: int, timeout_s: float = 5) -> OpaEngine:
    rego = tmp_path / "rego"
    write_rego(rego, main=MAIN, allow=ALLOW)
    return OpaEngine(build(rego), OpaConfig(port=port, timeout_s=timeout_s))


def test_one_kept_alive_connection_serves_every_decision(tmp_path, relay):
    engine = engine_for(tmp_path, relay.port)
    try:
        opened = relay.accepted  # the push (list, puts, marker) may use its own
        for _ in range(200):
            assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"
        assert relay.accepted - opened <= 1
    finally:
        engine.close()


def test_a_connection_the_sidecar_closed_is_replaced_without_failing_the_call(tmp_path, relay):
    engine = engine_for(tmp_path, relay.port)
    try:
        assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"
        for _ in range(3):
            relay.cut()  # as an idle timeout or a proxy restart would
            time.sleep(0.05)
            assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"
    finally:
        engine.close()


def test_a_sidecar_that_stops_answering_is_a_timeout_within_the_bound(tmp_path, relay):
    engine = engine_for(tmp_path, relay.port, timeout_s=0.5)
    try:
        assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"
        relay.mute = True
        relay.cut()
        t0 = time.monotonic()
        with pytest.raises(EngineUnavailable, match="did not answer within 0.5s"):
            engine.evaluate(call("read_invoice"))
        assert time.monotonic() - t0 < 2.0  # one timeout, not one per retry
        relay.mute = False
        relay.cut()
        assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"  # back: answered again
    finally:
        engine.close()


def test_a_sidecar_that_is_gone_is_unavailable_at_once(tmp_path, sidecar):
    engine = engine_for(tmp_path, sidecar.port)
    try:
        assert engine.evaluate(call("read_invoice"))["outcome"] == "approve"
        sidecar.stop()
        t0 = time.monotonic()
        with pytest.raises(EngineUnavailable, match="unavailable"):
            engine.evaluate(call("read_invoice"))
        assert time.monotonic() - t0 < 1.0
    finally:
        engine.close()
