"""``GET /readyz`` (readiness) next to ``/healthz`` (liveness): the database answers a
``SELECT 1`` in time and the process's status says the scheduler runs — else 503 naming the
failing check, never the database's URL or password."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from starlette.testclient import TestClient

import bot.http
from bot.http import create_app
from credit.store.db import make_engine

PASSWORD = "Sup3r-Secret_pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_url(port: int) -> str:
    return f"postgresql+psycopg://creditbot:{PASSWORD}@127.0.0.1:{port}/test"


class SilentServer:
    """Accepts TCP connections and never says a word (a database that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def test_ready_when_the_database_answers(engine):
    with TestClient(create_app(engine=engine)) as client:
        response = client.get("/readyz")
        assert client.get("/healthz").json() == {"status": "ok"}
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


def test_ready_includes_the_process_status(engine):
    status = {"scheduler": "running", "leader": True}
    with TestClient(create_app(engine=engine, status=lambda: status)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "scheduler": "running", "leader": True},
    }


def test_a_follower_replica_is_ready_too(engine):
    status = {"scheduler": "running", "leader": False}
    with TestClient(create_app(engine=engine, status=lambda: status)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["leader"] is False


def test_not_ready_when_the_scheduler_has_stopped(engine):
    state = {"scheduler": "running", "leader": True}
    with TestClient(create_app(engine=engine, status=lambda: state)) as client:
        assert client.get("/readyz").status_code == 200
        state["scheduler"] = "stopped"
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # alive all the same
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "failing": ["scheduler"],
        "checks": {"database": "ok", "scheduler": "stopped", "leader": True},
    }


def test_not_ready_when_the_status_callable_raises(engine):
    def broken() -> dict[str, object]:
        raise RuntimeError(f"cannot tell (password {PASSWORD})")

    with TestClient(create_app(engine=engine, status=broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["status"]
    assert PASSWORD not in response.text
    assert "Traceback" not in response.text


def test_not_ready_when_postgresql_refuses_the_connection():
    port = free_port()  # nothing listens there
    engine = make_engine(pg_url(port))
    try:
        with TestClient(create_app(engine=engine, status=lambda: {"scheduler": "running"})) as c:
            response = c.get("/readyz")
    finally:
        engine.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["failing"] == ["database"]
    assert body["checks"]["database"] == "unreachable (OperationalError)"
    assert body["checks"]["scheduler"] == "running"
    for leak in (PASSWORD, "creditbot:", "postgresql", str(port), "Traceback"):
        assert leak not in response.text


def test_not_ready_when_the_sqlite_file_cannot_be_opened(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "creditbot.db"
    engine = create_engine(f"sqlite:///{path}")  # make_engine would create the directory
    with TestClient(create_app(engine=engine)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]
    assert str(tmp_path) not in response.text
    assert not path.parent.exists()


def test_a_database_that_hangs_is_not_ready_in_time_and_is_probed_once(silent_server, monkeypatch):
    monkeypatch.setattr(bot.http, "READY_TIMEOUT_SECONDS", 0.5)
    engine = make_engine(pg_url(silent_server.port), connect_args={"connect_timeout": 10})
    try:
        with TestClient(create_app(engine=engine)) as client:
            started = time.monotonic()
            first = client.get("/readyz")
            second = client.get("/readyz")  # the first probe still hangs: no second one
            elapsed = time.monotonic() - started
    finally:
        silent_server.close()  # the hanging probe fails now
        engine.dispose()
    for response in (first, second):
        assert response.status_code == 503
        assert response.json() == {
            "status": "not ready",
            "failing": ["database"],
            "checks": {"database": "no answer within 0.5 s"},
        }
        assert PASSWORD not in response.text
    assert elapsed < 5
    assert len(silent_server.accepted) == 1
