"""The digest's aging chart (``bot.charts``): a real PNG, not blank, every bucket drawn, Chinese
names without a missing glyph, the trend panel when there is a trend, labels in the
recipient's language, one drawing per scope and language."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg

from bot import charts
from bot.charts import BUCKET_COLOURS, TREND_COLOUR, aging_chart, chart_filename, chart_title
from bot.i18n import TEMPLATES
from tests.support.digest_payloads import CHINESE_CUSTOMERS, digest_payload

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """Each test draws its charts (the cache would hide a drawing's warnings)."""
    charts.clear_cache()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def pixels(data: bytes) -> np.ndarray:
    """The image as uint8 RGB (matplotlib reads PNG as floats in 0..1)."""
    img = mpimg.imread(io.BytesIO(data), format="png")
    return np.round(img[..., :3] * 255).astype(np.uint8)


def colour_count(img: np.ndarray, hex_colour: str, tolerance: int = 2) -> int:
    """Pixels of ``hex_colour`` (± ``tolerance`` per channel)."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(img.astype(np.int16) - rgb) <= tolerance).all(axis=-1).sum())


def draw_strictly(payload: dict[str, Any], locale: str | None = None) -> bytes:
    """Draw with every warning an error: a missing glyph is
    ``UserWarning: Glyph … missing from font(s) …``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return aging_chart(payload, locale)


def test_a_png_of_bounded_size_with_every_bucket_and_the_trend() -> None:
    data = draw_strictly(digest_payload("region"))

    width, height = png_size(data)
    assert width == 900 and 600 <= height <= 1000
    assert 20_000 < len(data) < 400_000
    img = pixels(data)
    assert img.shape == (height, width, 3)
    # not blank: many colours, real contrast, a white background
    assert img.std() > 20
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    assert colour_count(img, "#ffffff") > width * height // 3
    # every bucket's bar (each a colour of its own, current → over 180), and the trend
    for colour in BUCKET_COLOURS:
        assert colour_count(img, colour) > 300, colour
    assert colour_count(img, TREND_COLOUR) > 200


def test_chinese_names_render_without_a_missing_glyph() -> None:
    payload = digest_payload("company", locale="zh_CN", chinese=True)
    assert any(name in str(payload) for name in CHINESE_CUSTOMERS)

    data = draw_strictly(payload)  # Chinese labels, region and customer names, 万 amounts
    assert pixels(data).std() > 20
    # and in English, the Chinese customer names still have their glyphs
    draw_strictly(payload, "en")


def test_a_font_without_the_glyphs_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strict drawing does catch a missing glyph (so the test above means something)."""
    monkeypatch.setattr(charts, "FONT_FAMILIES", ["DejaVu Sans"])
    with pytest.raises(UserWarning, match="missing from font"):
        draw_strictly(digest_payload("region", chinese=True))


def test_the_trend_panel_only_with_two_points_or_more() -> None:
    with_trend = draw_strictly(digest_payload("region", trend_days=30))
    one_point = draw_strictly(digest_payload("region", trend_days=1))
    no_trend = draw_strictly(digest_payload("region", trend_days=0))

    assert colour_count(pixels(with_trend), TREND_COLOUR) > 200
    for data in (one_point, no_trend):
        assert colour_count(pixels(data), TREND_COLOUR) == 0
    assert png_size(with_trend)[1] > png_size(one_point)[1] == png_size(no_trend)[1]
    # two points are a trend
    assert colour_count(pixels(draw_strictly(digest_payload("region", trend_days=2))), TREND_COLOUR)


def test_nothing_open_still_draws_a_chart() -> None:
    payload = digest_payload("rep", trend_days=0)
    for b in payload["buckets"]:
        b["totals"] = {"CNY": "0.00"}
        b["change"] = None
    payload["top_overdue"] = []
    payload["total_open"] = {"CNY": "0.00"}

    data = draw_strictly(payload)
    img = pixels(data)
    assert png_size(data)[1] < 500  # one panel
    assert img.std() > 5  # the titles and "nothing open"
    assert not any(colour_count(img, c) for c in BUCKET_COLOURS)


def test_labels_follow_the_recipients_language() -> None:
    en = digest_payload("region", locale="en")
    zh = digest_payload("region", locale="zh_CN")
    assert aging_chart(en) != aging_chart(zh)
    assert aging_chart(en, "zh_CN") == aging_chart(zh)  # an explicit locale wins
    assert chart_title(en) == "Receivables aging — region East — Nov 25, 2026"
    assert chart_title(en, "zh_CN") == "应收账款账龄 — East — 2026年11月25日"
    assert chart_filename(en) == "aging-2026-11-25.png"


def test_every_chart_and_digest_string_is_translated() -> None:
    catalogs = {}
    for locale in ("en", "zh_CN"):
        with open(Path(TEMPLATES) / "i18n" / f"{locale}.toml", "rb") as fh:
            catalogs[locale] = tomllib.load(fh)
    wanted = {k for k in catalogs["en"] if k.startswith(("chart_", "digest_", "bucket_"))}
    assert len(wanted) > 50
    assert wanted <= catalogs["zh_CN"].keys()


def test_one_drawing_per_scope_and_language() -> None:
    manager_a = digest_payload("region")
    manager_b = digest_payload("region")
    manager_b["recipient"] = {**manager_b["recipient"], "code": "rm-east-2", "name": "Bo Li"}
    before = dict(charts.stats)

    first = aging_chart(manager_a)
    second = aging_chart(manager_b)  # the same region, date and language
    assert first == second
    assert charts.stats["drawn"] == before["drawn"] + 1
    assert charts.stats["cached"] == before["cached"] + 1

    manager_b["buckets"][0]["totals"]["CNY"] = "1.00"  # other numbers: drawn again
    assert aging_chart(manager_b) != first
    aging_chart(manager_a, "zh_CN")  # another language: drawn again
    assert charts.stats["drawn"] == before["drawn"] + 3


def test_drawing_from_several_threads() -> None:
    """The transports draw in worker threads: one at a time, every result a whole PNG."""
    payloads = [digest_payload("region"), digest_payload("company", chinese=True)] * 2
    payloads[2]["scope_name"] = "West"
    payloads[3]["scope_name"] = "Shanghai"
    results: list[bytes] = []
    errors: list[BaseException] = []

    def draw(p: dict[str, Any]) -> None:
        try:
            results.append(draw_strictly(p))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=draw, args=(p,)) for p in payloads]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 4 and all(png_size(r)[0] == 900 for r in results)


def test_no_pyplot_and_no_backend_set_for_the_process() -> None:
    code = (
        "import sys, matplotlib\n"
        "from bot.charts import aging_chart\n"
        "from tests.support.digest_payloads import digest_payload\n"
        "png = aging_chart(digest_payload('region'))\n"
        "assert png.startswith(b'\\x89PNG')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "print(matplotlib.rcParams['font.family'])\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "Noto" not in out.stdout  # the rc_context was restored
