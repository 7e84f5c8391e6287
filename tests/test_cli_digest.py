"""`creditbot digest --as-of DATE --to file DIR|console` on the demo ledger: every digest of the
date rendered (text and aging chart), nothing sent, queued or stored; and `creditbot demo`
writes the company digest's chart."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bot.charts import aging_chart
from bot.cli import app
from bot.compose import compose
from bot.transports.console import render_text
from credit.settings import Settings
from credit.store.db import make_engine, read_session
from credit.store.digest import build_digests
from credit.store.models import AgingSnapshot, OutboxMessage

AS_OF = "2026-11-25"  # a Wednesday
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A demo database (built once for the module): config path, URL, the demo's output."""
    tmp = tmp_path_factory.mktemp("cli_digest")
    db = tmp / "data" / "demo.db"
    path = tmp / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{db.as_posix()}"\n', encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("CREDITBOT_CONFIG", "CREDITBOT_DATABASE__URL"):
            mp.delenv(var, raising=False)
        result = CliRunner().invoke(app, ["--config", str(path), "demo", "--as-of", AS_OF])
    assert result.exit_code == 0, result.output
    return path, f"sqlite:///{db.as_posix()}", result.output


@pytest.fixture
def config(demo, monkeypatch):  # type: ignore[no-untyped-def]
    for var in ("CREDITBOT_CONFIG", "CREDITBOT_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)
    return demo


def expected_digests(url: str) -> dict[str, dict]:
    """What build_digests gives for the date (person code → payload)."""
    engine = make_engine(url)
    try:
        with read_session(engine) as s:
            now = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
            return {
                d.code: d.payload for d in build_digests(s, Settings(), date(2026, 11, 25), now)
            }
    finally:
        engine.dispose()


def counts(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with read_session(engine) as s:
            outbox = s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one()
            snaps = s.execute(select(func.count()).select_from(AgingSnapshot)).scalar_one()
            return outbox, snaps
    finally:
        engine.dispose()


def test_digest_to_files_writes_a_text_and_a_chart_per_person(config, tmp_path) -> None:
    path, url, _ = config
    out = tmp_path / "digests"

    result = CliRunner().invoke(
        app, ["--config", str(path), "digest", "--as-of", AS_OF, "--to", "file", str(out)]
    )

    assert result.exit_code == 0, result.output
    expected = expected_digests(url)
    scopes = {p["scope"] for p in expected.values()}
    assert scopes == {"company", "region", "rep"}  # the desks, the managers, reps with a day
    assert f"{len(expected)} digest(s) for {AS_OF} in {out}" in result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{code}.{ext}" for code in expected for ext in ("txt", "png"))
    for code, payload in expected.items():
        text = (out / f"{code}.txt").read_text(encoding="utf-8")
        png = (out / f"{code}.png").read_bytes()
        assert png.startswith(PNG) and len(png) > 10_000
        assert png == aging_chart(payload)
        title = (
            "Daily receivables digest"
            if payload["recipient"]["locale"] == "en"
            else "应收账款每日汇总"
        )
        assert text.lstrip().startswith(f"== {title}"), (code, text[:80])
        if payload["scope"] == "company":
            assert ("By region" in text) or ("各区域" in text)
    assert counts(url) == (0, 0)  # nothing queued, no snapshot written


def test_digest_to_the_console(config) -> None:
    path, url, _ = config
    result = CliRunner().invoke(app, ["--config", str(path), "digest", "--as-of", AS_OF])

    assert result.exit_code == 0, result.output
    expected = expected_digests(url)
    assert result.output.count(f"[chart: aging-{AS_OF}.png, ") == len(expected)
    for code, payload in expected.items():
        assert f">>> {payload['recipient']['name']} ({code}, {payload['scope']})" in result.output
    assert counts(url) == (0, 0)


def test_digest_needs_a_database_with_the_schema(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CREDITBOT_CONFIG", raising=False)
    path = tmp_path / "config.toml"
    db = tmp_path / "empty.db"
    path.write_text(f'[database]\nurl = "sqlite:///{db.as_posix()}"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(path), "digest", "--as-of", AS_OF])
    assert result.exit_code == 2
    assert "creditbot db upgrade" in result.output


def test_the_demo_writes_the_company_digest_chart_next_to_its_database(config) -> None:
    _, url, output = config
    chart = Path(url.removeprefix("sqlite:///")).parent / "demo-digest.png"
    assert chart.exists() and chart.read_bytes().startswith(PNG)
    assert "Company digest chart" in output and "demo-digest.png" in output
    company = [p for p in expected_digests(url).values() if p["scope"] == "company"]
    assert chart.read_bytes() == aging_chart(company[0])
    # and the digest itself is shown, as the console transport would print it
    text = render_text(compose(company[0]))
    assert text.strip().splitlines()[0] in output
