"""Fault tests: real ``creditbot run`` replicas on 127.0.0.1, a real PostgreSQL, and the fake
Slack Web API (``tests.fakes.slack_api``) served over real HTTP from the test process.

What the tests here share:

* ``faults`` marker (registered below; every test in this directory carries it).
* ``fresh_pg_url``: a database of its own on the shared PostgreSQL server (dropped after);
  ``PrivateCluster``: a PostgreSQL cluster of the test's own (initdb into a temporary
  directory, ``pg_ctl`` on a free port), for tests that stop and restart the server.
* ``fleet``: starts replicas (``creditbot run --port P``) with a log file each, finds the
  leader through ``/readyz``, and kills every process it started at teardown — also when the
  test failed, in which case the replicas' logs are added to the failure report.
* Time: replicas run "on" a working day through ``CREDITBOT_CLOCK_START`` (``jobs.clock.
  OffsetClock``). The day is the first working day (CN) *after* today, at 09:00 Shanghai
  time: the HTTP side (the ERP API, Slack clicks) stamps rows with the real clock, and
  those rows must be due for the dispatchers, whose clocks are shifted — shifting into the
  past would leave them waiting for months. ``OffsetClock`` starts at the given instant when
  the process starts, so each replica is given the base instant plus the seconds elapsed
  since the test's start: their clocks then agree within their start-up latencies (up to a
  second or two). Tests that compare times across processes exactly (leases, Retry-After)
  run their replicas on the real clock instead (``Fleet.start(..., clock=False)``) and send
  admin alerts, which no send window holds back.
* Seeding: a large ledger (``bench.ledger``) and a small approvals ledger, written through
  the store into a database that ``creditbot db upgrade`` would recognise (migrated first).
* Waiting: ``wait_for`` polls a condition with a deadline; nothing sleeps to let time pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import PG_URL, require_postgres
from tests.fakes.slack_api import FakeSlackAPI, StoredMessage
from tests.support.slack_requests import block_actions_payload, slack_signature

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SHANGHAI = ZoneInfo("Asia/Shanghai")
SIGNING_SECRET = "fault-tests-signing-secret-5f2c9a"
API_KEY = "fault-tests-api-key-7d1e"
CALLBACK_SECRET = "fault-tests-callback-secret-3b8e"
LOG_TAIL_LINES = 200

T = TypeVar("T")


# --- the marker ---------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: fault-injection tests with real processes (creditbot run replicas, "
        "PostgreSQL, the fake Slack over HTTP); about four minutes in all",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the tail of every replica's log."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    fleet: Fleet | None = getattr(item, "_fault_fleet", None)
    if report.failed and fleet is not None:
        report.sections.append((f"replica logs ({report.when})", fleet.dump()))


# --- waiting ------------------------------------------------------------------------------


def wait_for(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # real processes: real time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- time ----------------------------------------------------------------------------------


def working_day_start() -> datetime:
    """09:00 in Shanghai on the first CN working day after today (there): after the 08:30
    scan time, inside the send window, and later than any real-clock timestamp."""
    from credit.calendar import BusinessCalendar

    calendar = BusinessCalendar("CN")
    day = datetime.now(SHANGHAI).date() + timedelta(days=1)
    while not calendar.is_business_day(day):
        day += timedelta(days=1)
    return datetime.combine(day, dtime(9, 0), SHANGHAI)


@dataclass
class ShiftedTime:
    """One shifted timeline for every process of a test (see the module's docstring)."""

    start: datetime = field(default_factory=working_day_start)
    began: float = field(default_factory=time.time)

    def env_value(self) -> str:
        return (self.start + timedelta(seconds=time.time() - self.began)).isoformat()

    def now(self) -> datetime:
        return (self.start + timedelta(seconds=time.time() - self.began)).astimezone(UTC)


# --- databases ----------------------------------------------------------------------------


def with_app_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def probe_engine(url: str) -> Engine:
    """An engine for the test's own looks at the database: no pool (a restarted server
    leaves no dead connection behind), a short connect timeout."""
    from credit.store.db import make_engine

    return make_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server (tests/conftest.py's ``PG_URL``)."""
    require_postgres()
    from credit.store.db import make_engine

    name = "faults_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


class PrivateCluster:
    """A PostgreSQL cluster of the test's own on a free port of 127.0.0.1 (trust auth): the
    test may stop and restart it without touching the shared server. As root the binaries
    run as ``postgres`` (``runuser``), in a directory that user owns."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found")
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="creditbot-faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")

    def _options(self) -> str:
        # fsync off: a test database, and restarts stay quick
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"

    def init(self) -> PrivateCluster:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def _pg_ctl(self, action: str, *options: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *options, action)

    def start(self) -> None:
        self._pg_ctl("start", "-l", str(self.log), "-o", self._options())

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("restart", "-l", str(self.log), "-m", mode, "-o", self._options())

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        admin = probe_engine(self.url()).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster; torn down (immediate stop, directory removed) after."""
    try:
        cluster = PrivateCluster().init()
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI") or os.environ.get("CREDITBOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"cannot run a private PostgreSQL cluster: {exc}")
        pytest.skip(f"cannot run a private PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.destroy()


# --- replicas -------------------------------------------------------------------------------


def creditbot_command() -> list[str]:
    script = Path(sys.executable).with_name("creditbot")
    if script.exists():
        return [str(script)]
    found = shutil.which("creditbot")
    if found:
        return [found]
    raise RuntimeError("the creditbot command is not installed next to this Python")


def replica_env(
    *,
    db_url: str,
    slack: FakeSlackAPI | None = None,
    channels: Sequence[str] = ("slack",),
    lease_seconds: int = 120,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The settings common to the fault tests, as environment overrides: fast leader checks
    and dispatch rounds, no digest, the fake Slack (each replica gets its own base URL path,
    ``…/api/<name>/``, added by ``Fleet.start``), an API key and a callback secret."""
    env = {
        "CREDITBOT_DATABASE__URL": db_url,
        "CREDITBOT_OUTBOX__CHANNELS": json.dumps(list(channels)),
        "CREDITBOT_OUTBOX__LEASE_SECONDS": str(lease_seconds),
        "CREDITBOT_SCHEDULE__DISPATCH_EVERY_SECONDS": "1",
        "CREDITBOT_SCHEDULE__DIGEST_AT": "23:59",
        "CREDITBOT_REPLICAS__LEADER_CHECK_SECONDS": "1",
        "CREDITBOT_API__API_KEYS": json.dumps([API_KEY]),
        "CREDITBOT_API__CALLBACK_SECRET": CALLBACK_SECRET,
        "CREDITBOT_LOGGING__LEVEL": "INFO",
    }
    if slack is not None:
        env["CREDITBOT_SLACK__BOT_TOKEN"] = slack.token
        env["CREDITBOT_SLACK__SIGNING_SECRET"] = SIGNING_SECRET
        env["CREDITBOT_SLACK__API_BASE_URL"] = slack.url
    env.update(extra or {})
    return env


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def readyz(self, timeout: float = 2.0) -> tuple[int, dict[str, Any]] | None:
        """(HTTP status, body) of ``/readyz``, or None when nothing answers."""
        try:
            resp = httpx.get(self.url("/readyz"), timeout=timeout)
        except httpx.HTTPError:
            return None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, {}

    def ready(self) -> bool:
        answer = self.readyz()
        return answer is not None and answer[0] == 200

    def is_leader(self) -> bool:
        answer = self.readyz()
        return bool(answer and answer[1].get("checks", {}).get("leader") is True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _clip(line: str, width: int = 400) -> str:
    return line if len(line) <= width else f"{line[:width]} … ({len(line)} characters)"


def _noise(line: str) -> bool:
    """APScheduler's two lines per run of a job every second."""
    return "apscheduler.executors" in line and ("Running job" in line or "executed" in line)


class Fleet:
    """The replicas of one test; everything started is killed at teardown."""

    def __init__(self, workdir: Path, clock: ShiftedTime) -> None:
        self.workdir = workdir
        self.clock = clock
        self.replicas: list[Replica] = []
        self.config = workdir / "empty-config.toml"
        self.config.write_text("# every setting comes from the environment\n")

    def start(self, name: str, env: dict[str, str], *, clock: bool = True) -> Replica:
        """``creditbot run`` on a free port. The replica's database connections carry
        ``application_name=<name>``, and its Slack calls go to ``…/api/<name>/``."""
        port = free_port()
        log = self.workdir / f"{name}.log"
        own = {
            **env,
            "CREDITBOT_CONFIG": str(self.config),
            "CREDITBOT_DATABASE__URL": with_app_name(env["CREDITBOT_DATABASE__URL"], name),
            "PYTHONUNBUFFERED": "1",
        }
        if "CREDITBOT_SLACK__API_BASE_URL" in own:
            own["CREDITBOT_SLACK__API_BASE_URL"] += f"{name}/"
        if clock:
            own["CREDITBOT_CLOCK_START"] = self.clock.env_value()
        base = {k: v for k, v in os.environ.items() if not k.startswith("CREDITBOT_")}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*creditbot_command(), "run", "--host", "127.0.0.1", "--port", str(port)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**base, **own},
                start_new_session=True,
            )
        replica = Replica(name, port, proc, log, time.monotonic())
        self.replicas.append(replica)
        return replica

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    def wait_ready(self, replicas: Sequence[Replica], timeout: float = 60) -> None:
        def ready() -> bool:
            for r in replicas:
                if not r.alive:
                    raise AssertionError(f"{r.name} exited ({r.proc.returncode})")
            return all(r.ready() for r in replicas)

        wait_for(ready, timeout=timeout, what="the replicas' /readyz to answer 200")

    def leaders(self, replicas: Sequence[Replica]) -> list[Replica]:
        return [r for r in replicas if r.alive and r.is_leader()]

    def wait_leader(self, replicas: Sequence[Replica], timeout: float) -> Replica:
        """The one leader among ``replicas`` (fails on two at once)."""

        def one() -> Replica | None:
            found = self.leaders(replicas)
            assert len(found) <= 1, f"two leaders at once: {[r.name for r in found]}"
            return found[0] if found else None

        return wait_for(one, timeout=timeout, what="a leader", interval=0.1)

    def wait_settled_leader(
        self, replicas: Sequence[Replica], timeout: float, hold: float = 2.5
    ) -> Replica:
        """The one leader once the same replica alone has said so for ``hold`` seconds.

        After a database restart a replica may still say it leads for up to
        ``leader_check_seconds``: its lock died with its old connection, which it learns at
        its next check, while another may have taken the lock already. The lock is never held
        twice; what ``/readyz`` reports can overlap for that moment."""
        deadline = time.monotonic() + timeout
        since, who = time.monotonic(), None
        while True:
            found = [r.name for r in self.leaders(replicas)]
            now = time.monotonic()
            current = found[0] if len(found) == 1 else None
            if current != who:
                since, who = now, current
            elif who is not None and now - since >= hold:
                return next(r for r in replicas if r.name == who)
            assert now < deadline, f"no settled leader (now {found})"
            time.sleep(0.1)

    def stop_all(self) -> None:
        for r in self.replicas:
            if r.alive:
                r.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for r in self.replicas:
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(timeout=10)

    def dump(self) -> str:
        parts = []
        for r in self.replicas:
            lines = [line for line in r.log_text().splitlines() if not _noise(line)]
            state = "running" if r.alive else f"exited {r.proc.returncode}"
            shown = min(len(lines), LOG_TAIL_LINES)
            parts.append(f"===== {r.name} (port {r.port}, {state}): last {shown} lines =====")
            parts.extend(_clip(line) for line in lines[-LOG_TAIL_LINES:])
        return "\n".join(parts)


@pytest.fixture
def shifted_time() -> ShiftedTime:
    return ShiftedTime()


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, shifted_time: ShiftedTime
) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, shifted_time)
    request.node._fault_fleet = fleet  # type: ignore[attr-defined]
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackAPI]:
    """The fake Slack, with room for every test's pace (bursts of cards to one DM)."""
    with FakeSlackAPI(burst=5.0, per_second=2.0) as slack:
        yield slack


# --- seeding ---------------------------------------------------------------------------------


def migrate(url: str) -> None:
    from credit.store.migrate import upgrade

    engine = probe_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def _reset_sequences(engine: Engine, tables: Sequence[str]) -> None:
    with engine.begin() as conn:
        for table in tables:
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
            )


def seed_big_ledger(
    url: str, as_of: date, *, invoices: int, customers: int, reps: int, regions: int
) -> int:
    """``bench.ledger``'s generated ledger in the migrated database (its schema is left as
    the migrations made it), everybody on Slack (``U<id>``). Returns the number of people."""
    from sqlmodel import SQLModel

    from bench.ledger import LedgerSize, build

    engine = probe_engine(url)
    try:
        size = LedgerSize(invoices=invoices, customers=customers, reps=reps, regions=regions)
        with (
            mock.patch.object(SQLModel.metadata, "drop_all"),
            mock.patch.object(SQLModel.metadata, "create_all"),
        ):
            build(engine, as_of, size)
        with engine.begin() as conn:
            conn.execute(text("UPDATE person SET slack_user_id = 'U' || lpad(id::text, 6, '0')"))
            people = conn.execute(text("SELECT count(*) FROM person")).scalar_one()
        _reset_sequences(engine, ["region", "person", "customer", "invoice"])
        return int(people)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class ApprovalPeople:
    """Slack user ids of the approvals ledger."""

    rep: str = "UAPRREP"
    rm1: str = "UAPRRM1"
    rm2: str = "UAPRRM2"
    names: dict[str, str] = field(
        default_factory=lambda: {"UAPRRM1": "Ada Approver", "UAPRRM2": "Bo Approver"}
    )


APPROVERS = ApprovalPeople()
OVER_LIMIT = "APR-OVER"  # a request of 30,000 puts it 10,000 over: a regional manager decides
WITHIN = "APR-OK"  # plenty of room: requests are approved at once


def seed_approvals(url: str) -> None:
    """Region APR: a rep and two regional managers on Slack; customer APR-OVER (limit
    100,000.00, 80,000.00 open, nothing overdue) and APR-OK (limit 10,000,000.00, nothing
    open), both the rep's, in CNY. Dates are relative to the real today."""
    from credit.store.db import write_session
    from credit.store.models import Customer, Invoice, Person, Region

    engine = probe_engine(url)
    today = datetime.now(SHANGHAI).date()
    try:
        with write_session(engine) as s:
            region = Region(code="APR", name="Approvals")
            s.add(region)
            s.flush()
            rm1 = Person(
                code="apr-rm1",
                name="Ada Approver",
                role="regional_manager",
                region_id=region.id,
                slack_user_id=APPROVERS.rm1,
            )
            rm2 = Person(
                code="apr-rm2",
                name="Bo Approver",
                role="regional_manager",
                region_id=region.id,
                slack_user_id=APPROVERS.rm2,
            )
            s.add_all([rm1, rm2])
            s.flush()
            rep = Person(
                code="apr-rep",
                name="Rae Rep",
                role="rep",
                region_id=region.id,
                manager_id=rm1.id,
                slack_user_id=APPROVERS.rep,
            )
            s.add(rep)
            s.flush()
            over = Customer(
                code=OVER_LIMIT,
                name="Over Limit Pumps",
                region_id=region.id,
                rep_id=rep.id,
                rating="C",
                credit_limit=Decimal("100000.00"),
            )
            ok = Customer(
                code=WITHIN,
                name="Roomy Valves",
                region_id=region.id,
                rep_id=rep.id,
                rating="B",
                credit_limit=Decimal("10000000.00"),
            )
            s.add_all([over, ok])
            s.flush()
            s.add(
                Invoice(
                    number="APR-INV-1",
                    customer_id=over.id,
                    issue_date=today - timedelta(days=5),
                    due_date=today + timedelta(days=40),
                    amount=Decimal("80000.00"),
                    open_amount=Decimal("80000.00"),
                    currency="CNY",
                )
            )
    finally:
        engine.dispose()


def raise_via_api(
    replica: Replica,
    order: str,
    *,
    customer: str = OVER_LIMIT,
    amount: str = "30000.00",
    callback_url: str | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    body: dict[str, Any] = {
        "customer_code": customer,
        "order_ref": order,
        "amount": amount,
        "currency": "CNY",
        "requested_by": "apr-rep",
    }
    if callback_url:
        body["callback_url"] = callback_url
    return httpx.post(
        replica.url("/api/v1/shipment-requests"),
        json=body,
        headers={"X-API-Key": API_KEY},
        timeout=timeout,
    )


# --- Slack clicks ----------------------------------------------------------------------------

_click_seq = iter(range(1, 10**9))
_click_lock = threading.Lock()


def cards_for(slack: FakeSlackAPI, user: str, order: str) -> list[StoredMessage]:
    """The approval cards about ``order`` in ``user``'s DM."""
    with slack._lock:
        messages = list(slack.messages.get(FakeSlackAPI.dm_for(user), []))
    return [m for m in messages if order in json.dumps(m.blocks, ensure_ascii=False)]


def signed_click(card: StoredMessage, user: str, action: str = "approve") -> tuple[bytes, dict]:
    """A signed ``block_actions`` request: ``user`` presses ``action`` on ``card``."""
    button = next(
        {**e, "block_id": b["block_id"]}
        for b in card.blocks
        for e in b.get("elements", [])
        if str(e.get("action_id", "")).split(":")[0] == action
    )
    with _click_lock:
        n = next(_click_seq)
    payload = block_actions_payload(
        user=user,
        channel=card.channel,
        ts=card.ts,
        text=card.text,
        blocks=card.blocks,
        button=button,
        n=n,
        trigger="5000",
    )
    body = urlencode({"payload": json.dumps(payload)})
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **slack_signature(body, str(int(time.time())), SIGNING_SECRET),
    }
    return body.encode(), headers


def post_all_at_once(
    requests: Sequence[tuple[str, bytes, dict[str, str]]], timeout: float = 20.0
) -> list[int | str]:
    """POST every (url, body, headers) from its own thread, released together by a barrier.
    The HTTP statuses (or the error's name), in order."""
    results: list[int | str] = ["not sent"] * len(requests)
    barrier = threading.Barrier(len(requests))

    def post(i: int, url: str, body: bytes, headers: dict[str, str]) -> None:
        barrier.wait(timeout=10)
        try:
            results[i] = httpx.post(url, content=body, headers=headers, timeout=timeout).status_code
        except httpx.HTTPError as exc:
            results[i] = type(exc).__name__

    threads = [
        threading.Thread(target=post, args=(i, *r), daemon=True) for i, r in enumerate(requests)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 15)
    return results


# --- looking at the database ----------------------------------------------------------------


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def outbox_by_status(engine: Engine, channel: str | None = None) -> dict[str, int]:
    where = "" if channel is None else "WHERE channel = :channel"
    found = rows(
        engine, f"SELECT status, count(*) FROM outbox {where} GROUP BY status", channel=channel
    )
    return {status: n for status, n in found}


def decisions_by_request(engine: Engine) -> dict[int, dict[str, int]]:
    """Per shipment request: how many audit rows of each ``shipment.*`` action."""
    out: dict[int, dict[str, int]] = {}
    for entity_id, action, n in rows(
        engine,
        "SELECT entity_id, action, count(*) FROM audit_log WHERE entity = 'shipment_request' "
        "GROUP BY entity_id, action",
    ):
        out.setdefault(int(entity_id), {})[action] = n
    return out


def slack_posts(slack: FakeSlackAPI) -> list[StoredMessage]:
    with slack._lock:
        return [m for messages in slack.messages.values() for m in messages]


def slack_admins(count: int) -> dict[str, dict[str, str]]:
    """``count`` admins reachable on Slack (adm10, UADMIN10, …), for ``seed_people``: admin
    alerts go at any hour, so tests that send them do not depend on the time of day."""
    return {
        f"adm{i:02d}": {"role": "admin", "slack_user_id": f"UADMIN{i:02d}"}
        for i in range(10, 10 + count)
    }
