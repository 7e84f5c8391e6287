"""The digest's chart: receivables aging as a PNG, in the recipient's language.

``aging_chart(payload)`` draws a digest payload (``credit.store.digest``, kind ``digest``):

* the open receivables per aging bucket in the reporting currency, each bar labelled with
  its amount and its change since the last digest;
* the most overdue customers (up to five), when there are any;
* the overdue total over the trend's days, when the trend has two points or more.

Amounts in other currencies are not drawn; a footnote names them. Labels come from
``templates/i18n`` (``chart_*``), numbers and dates from Babel in the recipient's locale
(1.2M, 123.5万; Nov 25, 11月25日).

matplotlib without pyplot: a ``Figure`` on its own ``FigureCanvasAgg`` (no global figure
registry, no GUI backend, nothing set for the process), rc settings in an ``rc_context``
(restored afterwards). Text is set in Noto Sans CJK (the ``noto-cjk-sans-otc`` package,
registered once: its Simplified Chinese face, else its Japanese one, which has the same Han
characters), so Chinese customer and region names have their glyphs; DejaVu Sans is the last
fallback. The layout is fixed (panels at computed places, in inches) and the figure is drawn
once and its pixels encoded (``matplotlib.image.imsave``): constrained layout and ``savefig``
would each draw it again.

matplotlib is not thread-safe: charts are drawn one at a time (a lock), so the transports call
this from worker threads. The last ``CACHE_SIZE`` charts are kept, keyed by what they show and
the language: a region's managers, or the company-wide desks, share one drawing.

Amounts become floats only for bar heights; every printed number comes from the decimal
string.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

import matplotlib
import numpy as np
from babel.dates import format_skeleton
from babel.numbers import format_compact_decimal, format_decimal
from matplotlib import font_manager
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bot.digest_message import bucket_label, scope_label
from bot.i18n import Translator, normalise_locale

log = logging.getLogger(__name__)

# "Noto Sans CJK SC" is the collection's Simplified Chinese face; JP (the collection's first
# face) covers the same Han characters, for a matplotlib that reads only the first face.
FONT_FAMILIES = ["Noto Sans CJK SC", "Noto Sans CJK JP", "DejaVu Sans"]
WIDTH_IN = 9.0
DPI = 100
TOP_SHOWN = 5
NAME_WIDTH = 32  # columns of a customer name (a CJK character takes two)
# the fixed layout, in inches
TITLE_IN = 0.55  # the chart's title
PANEL_TITLE_IN = 0.35  # a panel's title
RIGHT_IN = 0.3
AGING_IN = 2.3
TREND_IN = 1.7
NAMES_IN = 2.6  # room for the customer names left of their bars
FOOTNOTE_IN = 0.35
# current → over 180 days: green to dark red
BUCKET_COLOURS = ("#4c9a2a", "#c9b52c", "#e8912d", "#e0622b", "#c0392b", "#7b1d1d")
TREND_COLOUR = "#2c6fbb"
CACHE_SIZE = 32
# the payload fields the chart shows (with the language: the cache key)
CHART_FIELDS = (
    "business_date",
    "scope",
    "scope_name",
    "reporting_currency",
    "buckets",
    "top_overdue",
    "trend",
    "total_open",
)
_LOCK = threading.RLock()  # matplotlib is not thread-safe; also guards the cache
_CACHE: OrderedDict[str, bytes] = OrderedDict()
stats = {"drawn": 0, "cached": 0}  # charts drawn, and served from the cache, in this process


@lru_cache(maxsize=1)
def register_cjk_font() -> str:
    """Register the Noto Sans CJK collection with matplotlib (once); returns its path."""
    import noto_cjk_sans_otc

    path = str(noto_cjk_sans_otc.FONT_PATH)
    font_manager.fontManager.addfont(path)
    return path


def _rc() -> dict[str, Any]:
    return {
        "font.family": FONT_FAMILIES,
        "axes.unicode_minus": False,  # a plain "-" (every font has it)
        "axes.titlesize": 11,
        "axes.titleweight": "normal",  # the CJK font has one weight (Regular)
        "font.size": 9,
        "savefig.dpi": DPI,
    }


def _amount(totals: dict[str, str] | None, currency: str) -> Decimal:
    if not totals:
        return Decimal(0)
    return Decimal(totals.get(currency) or 0)


@lru_cache(maxsize=4096)
def _compact(value: Decimal | float, locale: str) -> str:
    """8,400 / 1.2M / 123.5万: whole units below 10,000, else Babel's compact format
    (cached: Babel is slow, and ticks repeat)."""
    if abs(value) < 10_000:
        return format_decimal(round(value), format="#,##0", locale=locale)
    return format_compact_decimal(value, locale=locale, fraction_digits=1)


def _signed(value: Decimal, locale: str) -> str:
    sign = "+" if value > 0 else "-" if value < 0 else "±"
    return sign + _compact(abs(value), locale)


def _width(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _clip(text: str, limit: int = NAME_WIDTH) -> str:
    """``text`` within ``limit`` columns (a CJK character takes two), cut with "…"."""
    if sum(_width(ch) for ch in text) <= limit:
        return text
    out, used = [], 1
    for ch in text:
        if used + _width(ch) > limit:
            break
        out.append(ch)
        used += _width(ch)
    return "".join(out) + "…"


def _plain(ax: Any, *, left: bool = False, bottom: bool = True) -> None:
    """Only the spines and axes we label: fewer artists, faster drawing."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.spines["left"].set_visible(left)
    ax.spines["bottom"].set_visible(bottom)


def _title(ax: Any, text: str) -> None:
    """A panel's title, left-aligned above its axes (a plain text: ``set_title`` measures the
    axis labels to place itself, which costs as much as drawing them)."""
    ax.text(
        0,
        1,
        text,
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontsize=11,
        transform_rotates_text=False,
        clip_on=False,
    )


def _aging_panel(ax: Any, t: Translator, payload: dict[str, Any], currency: str) -> None:
    """Bars per bucket, each labelled with its amount and its change (no y axis)."""
    buckets = payload.get("buckets") or []
    values = [_amount(b.get("totals"), currency) for b in buckets]
    colours = [BUCKET_COLOURS[min(i, len(BUCKET_COLOURS) - 1)] for i in range(len(buckets))]
    bars = ax.bar(range(len(buckets)), [float(v) for v in values], color=colours, width=0.65)
    ax.set_xticks(range(len(buckets)), [bucket_label(t, b, prefix="chart_") for b in buckets])
    ax.tick_params(axis="x", length=0)
    ax.yaxis.set_visible(False)
    _plain(ax)
    _title(ax, t("chart_aging_title", currency=currency))
    top = max((float(v) for v in values), default=0.0)
    if top <= 0:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, t("chart_empty"), transform=ax.transAxes, ha="center", color="grey")
        return
    ax.set_ylim(0, top * 1.3)
    for bar, value, bucket in zip(bars, values, buckets, strict=True):
        text = _compact(value, t.locale)
        change = bucket.get("change")
        if change is not None and _amount(change, currency) != 0:
            text += f"\n{_signed(_amount(change, currency), t.locale)}"
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + top * 0.02,
            text,
            ha="center",
            va="bottom",
            fontsize=8,
            linespacing=1.1,
        )


def _top_panel(ax: Any, t: Translator, top: list[dict[str, Any]], currency: str) -> None:
    """Horizontal bars, one per customer, the most overdue on top (no x axis)."""
    names = [_clip(str(c.get("customer_name") or c.get("customer") or "")) for c in top]
    values = [_amount(c.get("overdue"), currency) for c in top]
    rows = range(len(top))
    ax.barh(rows, [float(v) for v in values], color="#c0392b", height=0.6)
    ax.set_yticks(rows, names)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(len(top) - 0.5, -0.5)  # the first row on top
    ax.xaxis.set_visible(False)
    _plain(ax, bottom=False)
    _title(ax, t("chart_top_title", currency=currency))
    widest = max((float(v) for v in values), default=0.0)
    ax.set_xlim(0, widest * 1.15 if widest > 0 else 1)
    for row, value in zip(rows, values, strict=True):
        ax.text(
            float(value) + widest * 0.01, row, _compact(value, t.locale), va="center", fontsize=8
        )


def _trend_panel(ax: Any, t: Translator, trend: list[dict[str, Any]], currency: str) -> None:
    """The overdue total per day, filled below; a few dates and amounts on the axes."""
    days = [date.fromisoformat(p["date"]) for p in trend]
    values = [float(_amount(p.get("overdue"), currency)) for p in trend]
    xs = range(len(days))
    ax.plot(xs, values, color=TREND_COLOUR, linewidth=1.8)
    ax.fill_between(xs, values, color=TREND_COLOUR, alpha=0.12)
    _title(ax, t("chart_trend_title", days=len(days), currency=currency))
    step = max(1, -(-len(days) // 6))
    ticks = list(range(len(days) - 1, -1, -step))[::-1]  # always label the last day
    ax.set_xticks(ticks, [format_skeleton("MMMd", days[i], locale=t.locale) for i in ticks])
    ax.set_xlim(-0.5, len(days) - 0.5)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v, t.locale)))
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.set_ylim(0, max(values) * 1.1 if max(values) > 0 else 1)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _plain(ax)


def _other_currencies(t: Translator, payload: dict[str, Any], currency: str) -> str:
    others = {
        cur: amount
        for cur, amount in (payload.get("total_open") or {}).items()
        if cur != currency and Decimal(amount) != 0
    }
    return t("chart_other_currencies", totals=t.totals(others)) if others else ""


def _layout(fig: Figure, panels: list[tuple[float, float, float]]) -> list[Any]:
    """Axes stacked top to bottom at fixed places: ``(height, left margin, bottom margin)``
    in inches per panel, under a title band (a fixed layout draws once; constrained layout
    would measure every text first)."""
    width, height = fig.get_size_inches()
    y = height - TITLE_IN
    axes = []
    for h, left, bottom in panels:
        y -= PANEL_TITLE_IN + h
        axes.append(
            fig.add_axes((left / width, y / height, 1 - (left + RIGHT_IN) / width, h / height))
        )
        y -= bottom
    return axes


def _panels(top: int, trend: bool) -> list[tuple[float, float, float]]:
    """(height, left margin, bottom margin) in inches: the aging (no y axis), the customers
    (their names on the left), the trend (amounts on the left, dates below)."""
    panels = [(AGING_IN, 0.35, 0.45)]
    if top:
        panels.append((0.34 * top, NAMES_IN, 0.2))
    if trend:
        panels.append((TREND_IN, 0.8, 0.45))
    return panels


def _chart_key(payload: dict[str, Any], locale: str) -> str:
    """What the chart shows (not who it is for): the region's managers share one chart."""
    shown = {key: payload.get(key) for key in CHART_FIELDS}
    raw = json.dumps([locale, shown], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def aging_chart(payload: dict[str, Any], locale: str | None = None) -> bytes:
    """The digest's chart as PNG bytes (``locale``: default the recipient's).

    The last ``CACHE_SIZE`` charts are kept: recipients of the same scope, date and language
    (a region's managers, the company-wide desks) get the same chart, drawn once."""
    lang = normalise_locale(locale or (payload.get("recipient") or {}).get("locale"))
    key = _chart_key(payload, lang)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            stats["cached"] += 1
            return _CACHE[key]
    png = _draw(payload, lang)
    with _LOCK:
        stats["drawn"] += 1
        _CACHE[key] = png
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return png


def clear_cache() -> None:
    """Forget the charts drawn so far (tests; a long-running process need not)."""
    with _LOCK:
        _CACHE.clear()


def _draw(payload: dict[str, Any], locale: str) -> bytes:
    t = Translator(locale)
    currency = str(payload.get("reporting_currency") or "CNY")
    top = [c for c in payload.get("top_overdue") or [] if _amount(c.get("overdue"), currency)]
    top = top[:TOP_SHOWN]
    trend = payload.get("trend") or []
    footnote = _other_currencies(t, payload, currency)
    panels = _panels(len(top), len(trend) >= 2)
    height = TITLE_IN + sum(PANEL_TITLE_IN + h + b for h, _, b in panels)
    height += FOOTNOTE_IN if footnote else 0.1
    with _LOCK, matplotlib.rc_context(_rc()):
        register_cjk_font()
        fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, facecolor="white")
        canvas = FigureCanvasAgg(fig)
        axes = iter(_layout(fig, panels))
        _aging_panel(next(axes), t, payload, currency)
        if top:
            _top_panel(next(axes), t, top, currency)
        if len(trend) >= 2:
            _trend_panel(next(axes), t, trend, currency)
        title = t(
            "chart_title", scope=scope_label(t, payload), date=t.date(payload["business_date"])
        )
        fig.text(0.5, 1 - 0.12 / height, title, ha="center", va="top", fontsize=13)
        if footnote:
            fig.text(
                0.01, 0.08 / height, footnote, ha="left", va="bottom", fontsize=8, color="grey"
            )
        canvas.draw()  # once; savefig would draw the figure again
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # opaque: the background is white
        out = io.BytesIO()
        mpimg.imsave(out, rgb, format="png")
    return out.getvalue()


def chart_filename(payload: dict[str, Any]) -> str:
    """``aging-<business date>.png``."""
    return f"aging-{payload['business_date']}.png"


def chart_title(payload: dict[str, Any], locale: str | None = None) -> str:
    """The chart's title in the recipient's language (file title, photo caption)."""
    t = Translator(locale or (payload.get("recipient") or {}).get("locale"))
    return t(
        "chart_file_title", scope=scope_label(t, payload), date=t.date(payload["business_date"])
    )


# (png, filename, title) -> what the platform answered, for the outbox row's ref
ChartSender = Callable[[bytes, str, str], Awaitable[dict[str, Any]]]


async def send_digest_chart(message: Any, send: ChartSender) -> dict[str, Any]:
    """Draw a digest's aging chart and hand it to ``send`` (Slack's upload, Telegram's photo);
    the fields for the ref.

    The digest's text is out by now: a chart that cannot be drawn or sent (a 429 included) is
    recorded in the ref (``"chart": "failed: …"``) and not raised, so the dispatcher does not
    send the text again (at least once holds for the text only; the chart is not retried)."""
    locale = message.address.get("locale")
    try:
        png = await asyncio.to_thread(aging_chart, message.payload, locale)
        title = chart_title(message.payload, locale)
        sent = await send(png, chart_filename(message.payload), title)
    except Exception as exc:  # whatever it was, a chart must not cost a second text
        log.warning("digest %s: chart not sent: %s", message.id, exc)
        return {"chart": f"failed: {type(exc).__name__}: {exc}"[:300]}
    return {"chart": "sent", **sent}
