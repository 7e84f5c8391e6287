"""A demo ledger for a Chinese manufacturer/distributor: regions, people, customers, invoices.

``build_demo_ledger`` fills an empty schema with a realistic receivables book that is the same
for the same ``seed`` and ``as_of``: four sales regions with a regional manager and reps each,
the credit desk, finance, legal, executives and an admin; 300 customers across every rating
(A/B/C/D/X/H; H blacklisted), limits by rating, probation for new customers, some already on
credit hold; and 5,000 invoices placed so that on ``as_of`` every tier of the configured tier
table holds plenty of open invoices (worse ratings hold the older debt), plus invoices not yet
in any tier, fully and partly paid invoices with their payments, disputes and promises to pay.

Everything is planned in Python first (one ``random.Random(seed)``, no clock, no float money),
then written with a few bulk INSERTs. Nothing is committed here: the caller's
``write_session`` does that.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import insert
from sqlmodel import Session

from credit.aging import Tier
from credit.settings import Settings
from credit.store.models import RATINGS, Customer, Invoice, Payment, Person, PromiseToPay, Region

OUR_DOMAIN = "huarui-mfg.com.cn"  # 华瑞精密制造有限公司, the company whose receivables these are

# code, name, cities, share of customers, reps
REGIONS: tuple[tuple[str, str, tuple[str, ...], int, int], ...] = (
    ("EAST", "华东", ("上海", "杭州", "苏州", "南京", "宁波", "无锡", "合肥", "常州"), 32, 5),
    ("SOUTH", "华南", ("广州", "深圳", "东莞", "佛山", "厦门", "福州", "中山"), 28, 4),
    ("NORTH", "华北", ("北京", "天津", "石家庄", "济南", "青岛", "太原", "唐山"), 22, 4),
    ("WEST", "西部", ("成都", "重庆", "西安", "昆明", "贵阳", "兰州", "绵阳"), 18, 3),
)

SURNAMES = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
    ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"),
    ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"), ("何", "he"), ("林", "lin"),
    ("高", "gao"), ("罗", "luo"), ("郑", "zheng"), ("梁", "liang"), ("谢", "xie"), ("宋", "song"),
    ("唐", "tang"), ("许", "xu"), ("韩", "han"), ("冯", "feng"), ("邓", "deng"), ("曹", "cao"),
)  # fmt: skip
GIVEN_NAMES = (
    ("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("强", "qiang"),
    ("磊", "lei"), ("军", "jun"), ("洋", "yang"), ("勇", "yong"), ("艳", "yan"), ("杰", "jie"),
    ("涛", "tao"), ("明", "ming"), ("超", "chao"), ("秀英", "xiuying"), ("建华", "jianhua"),
    ("志强", "zhiqiang"), ("晓东", "xiaodong"), ("海燕", "haiyan"), ("文博", "wenbo"),
    ("思远", "siyuan"), ("雨桐", "yutong"), ("子涵", "zihan"), ("浩然", "haoran"),
    ("丽华", "lihua"), ("国栋", "guodong"), ("婷婷", "tingting"), ("俊杰", "junjie"),
    ("雪梅", "xuemei"),
)  # fmt: skip

COMPANY_WORDS = (
    "宏达", "恒信", "华泰", "鑫源", "金鼎", "瑞丰", "永盛", "天诚", "盛世", "嘉禾", "博远", "昌盛",
    "德润", "富通", "广源", "锦程", "凯达", "利华", "明辉", "宁远", "启航", "荣欣", "顺达", "泰和",
    "万通", "伟业", "祥瑞", "信达", "扬帆", "亿丰", "中天", "卓越", "众鑫", "东升", "汇通", "精诚",
)  # fmt: skip
INDUSTRIES = (
    "机械", "电子科技", "五金制品", "建材", "化工", "塑胶制品", "包装材料", "电气设备", "汽车配件",
    "纺织", "新能源科技", "精密模具", "物流", "贸易", "家具", "照明电器", "仪器仪表", "环保设备",
    "医疗器械", "自动化设备",
)  # fmt: skip

# Share (in %) of customers per rating: mostly B/C, a few X and H.
RATING_SHARES = {"A": 10, "B": 32, "C": 35, "D": 13, "X": 6, "H": 4}
# Standing limits in CNY (low, high, step) by rating; D is per-deal only, X and H get none.
LIMITS_CNY = {"A": (3_000_000, 10_000_000, 100_000), "B": (1_000_000, 3_000_000, 50_000),
              "C": (300_000, 1_000_000, 50_000)}  # fmt: skip
TERMS = (30, 45, 60, 90)
TERMS_WEIGHTS = {"A": (1, 2, 4, 3), "B": (3, 3, 3, 1), "C": (4, 3, 2, 1), "D": (6, 3, 1, 0),
                 "X": (6, 3, 1, 0), "H": (7, 3, 0, 0)}  # fmt: skip
# How much business a customer of each rating does with us.
VOLUME = {"A": 15, "B": 12, "C": 10, "D": 8, "X": 5, "H": 4}

# Invoice amounts: integer yuan brackets (CNY; USD is a seventh) and their weights by rating.
AMOUNT_BRACKETS = ((5_000, 20_000), (20_000, 80_000), (80_000, 250_000), (250_000, 800_000))
AMOUNT_WEIGHTS = {"A": (20, 40, 28, 12), "B": (25, 42, 24, 9), "C": (32, 42, 20, 6),
                  "D": (40, 40, 16, 4), "X": (40, 40, 16, 4), "H": (40, 40, 16, 4)}  # fmt: skip

# Invoice categories: "paid", "future" (open, not yet in any tier) and the tier classes.
# Share of the invoices (per mille) and how strongly each rating attracts them.
CLASS_SHARE = {"paid": 340, "future": 100, "current": 170, "early": 120, "mid": 90,
               "late": 100, "legal": 80}  # fmt: skip
AFFINITY = {  # class -> rating -> weight (x10)
    "paid": {"A": 10, "B": 10, "C": 9, "D": 6, "X": 3, "H": 2},
    "future": {"A": 10, "B": 10, "C": 8, "D": 4, "X": 1, "H": 0},
    "current": {"A": 10, "B": 10, "C": 9, "D": 6, "X": 2, "H": 0},
    "early": {"A": 6, "B": 8, "C": 10, "D": 10, "X": 5, "H": 2},
    "mid": {"A": 2, "B": 5, "C": 8, "D": 12, "X": 10, "H": 6},
    "late": {"A": 1, "B": 3, "C": 6, "D": 13, "X": 20, "H": 20},
    "legal": {"A": 0, "B": 1, "C": 3, "D": 10, "X": 25, "H": 35},
}
PAY_DELAY = {"A": (-5, 8), "B": (-3, 20), "C": (0, 40), "D": (10, 90), "X": (30, 180),
             "H": (60, 240)}  # fmt: skip
DISPUTE_PERMILLE = {"future": 10, "current": 20, "early": 50, "mid": 70, "late": 80, "legal": 100}
PARTIAL_PERMILLE = {"future": 20, "current": 60, "early": 120, "mid": 150, "late": 180,
                    "legal": 150}  # fmt: skip
PROMISE_PERMILLE = {"early": 80, "mid": 250, "late": 150, "legal": 60}

DISPUTE_REASONS = (
    "货物质量问题：第二批次抽检不合格，客户要求退换",
    "数量短缺：实收比送货单少20件",
    "价格与采购订单不符（PO单价低3%）",
    "发票抬头/税号错误，需红冲重开",
    "退货未冲红，客户按净额付款",
    "Goods damaged in transit; claim filed with the carrier",
    "Price differs from the purchase order",
    "Delivered late; customer deducts the contractual penalty",
    "Quarterly rebate not yet credited",
    "Customer says the shipment was never received (POD requested)",
)
PROMISE_NOTES = (
    "客户承诺月底前付清",
    "财务已排款，预计下周到账",
    "分两期付款，首期本周内支付",
    "等待客户总部审批付款",
    "承兑汇票，已寄出",
    "Will pay after their customer pays them",
    "Payment run on the 25th, confirmed by their CFO",
    "Agreed repayment plan in writing (signed)",
    "Pays half now, rest next month",
)
HOLD_REASONS = {
    "H": "黑名单客户（H级）：禁止赊销，款到发货 / blacklisted: no credit, cash before delivery",
    "X": "支票退票，评级降为X：停止供货 / cheque dishonoured, rated X: supply stopped",
    "D": "逾期超过60天：停止供货，待还款计划 / over 60 days overdue: supply stopped",
}
ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class DemoSummary:
    regions: int
    people: int
    reps: int
    customers: int
    invoices: int
    open_invoices: int
    paid_invoices: int
    disputed: int
    promises: int
    payments: int

    def __str__(self) -> str:
        return (
            f"{self.regions} regions, {self.people} people ({self.reps} reps), "
            f"{self.customers} customers, {self.invoices} invoices "
            f"({self.open_invoices} open, {self.paid_invoices} paid, {self.disputed} disputed), "
            f"{self.payments} payments, {self.promises} promises to pay"
        )


# --- the plan (pure Python) ------------------------------------------------------------------


@dataclass
class _Customer:
    code: str
    name: str
    region: int
    rep: int  # index into the reps of the plan
    rating: str
    currency: str
    terms: int
    limit: Decimal
    weight: int  # volume x per-customer spread
    onboarded: date | None = None
    probation_until: date | None = None
    credit_hold: bool = False
    hold_reason: str | None = None
    hold_since: datetime | None = None


@dataclass
class _Invoice:
    customer: int
    category: str  # "paid", "future" or a tier name
    klass: str  # "paid", "future", or the tier's class
    issue_date: date
    due_date: date
    amount_cents: int
    open_cents: int
    disputed: bool = False
    dispute_reason: str | None = None
    number: str = ""
    payments: list[tuple[date, int]] = field(default_factory=list)
    promises: list[_Promise] = field(default_factory=list)


@dataclass
class _Promise:
    promised_date: date
    amount_cents: int
    status: str
    note: str
    recorded_by: str  # person key
    created_at: datetime


@dataclass
class _Person:
    code: str
    name: str
    role: str
    region: int | None
    manager: str | None
    email: str
    slack_user_id: str | None
    telegram_chat_id: int | None
    locale: str


def _cents(value: int) -> Decimal:
    return Decimal(value).scaleb(-2)


def _at(day: date, hour: int) -> datetime:
    """A Shanghai office hour on ``day``, as an aware UTC datetime."""
    return datetime.combine(day, time(hour), tzinfo=SHANGHAI).astimezone(UTC)


def _quotas(shares: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` by integer ``shares`` (largest remainder); each share >0 gets >=1."""
    weight = sum(shares.values())
    counts = {k: total * v // weight for k, v in shares.items()}
    by_remainder = sorted(shares, key=lambda k: (-(total * shares[k] % weight), k))
    for k in by_remainder[: total - sum(counts.values())]:
        counts[k] += 1
    for k in shares:  # keep every category present when there is room
        if counts[k] == 0 and shares[k] > 0 and total >= len(shares):
            donor = max(counts, key=lambda d: counts[d])
            counts[donor] -= 1
            counts[k] = 1
    return counts


def _tier_class(tier: Tier) -> str:
    if tier.min_days <= 0:
        return "current"
    if tier.min_days < 30:
        return "early"
    if tier.min_days < 60:
        return "mid"
    if tier.min_days <= 180:
        return "late"
    return "legal"


class _Planner:
    def __init__(self, rng: random.Random, as_of: date, settings: Settings) -> None:
        self.rng = rng
        self.as_of = as_of
        self.settings = settings
        self.tiers = settings.tier_table.tiers
        self.people: list[_Person] = []
        self.reps: list[str] = []  # person keys
        self.rep_region: list[int] = []
        self.managers: dict[int, str] = {}  # region index -> manager person key
        self.customers: list[_Customer] = []
        self.invoices: list[_Invoice] = []
        self._names: set[str] = set()
        self._emails: set[str] = set()
        self._slack: set[str] = set()
        self._telegram: set[int] = set()

    # people ---------------------------------------------------------------------------------

    def _person(
        self, key: str, role: str, *, region: int | None, manager: str | None, locale: str
    ) -> None:
        rng = self.rng
        while True:
            (s_han, s_pin), (g_han, g_pin) = rng.choice(SURNAMES), rng.choice(GIVEN_NAMES)
            name, email = s_han + g_han, f"{g_pin}.{s_pin}@{OUR_DOMAIN}"
            if name not in self._names and email not in self._emails:
                break
        self._names.add(name)
        self._emails.add(email)
        slack = telegram = None
        channels = rng.choices(("slack", "telegram", "both"), weights=(5, 2, 3))[0]
        if channels in ("slack", "both"):
            while slack is None or slack in self._slack:
                slack = "U0" + "".join(rng.choices(ALNUM, k=8))
            self._slack.add(slack)
        if channels in ("telegram", "both"):
            while telegram is None or telegram in self._telegram:
                telegram = rng.randint(100_000_000, 7_999_999_999)
            self._telegram.add(telegram)
        self.people.append(
            _Person(key, name, role, region, manager, email, slack, telegram, locale)
        )

    def plan_people(self) -> None:
        rng = self.rng
        self._person("EXEC-GM", "executive", region=None, manager=None, locale="zh_CN")
        self._person("EXEC-CFO", "executive", region=None, manager="EXEC-GM", locale="en")
        self._person("CM-1", "credit_manager", region=None, manager="EXEC-CFO", locale="zh_CN")
        self._person("CM-2", "credit_manager", region=None, manager="CM-1", locale="en")
        self._person("FIN-1", "finance", region=None, manager="EXEC-CFO", locale="zh_CN")
        self._person("FIN-2", "finance", region=None, manager="FIN-1", locale="zh_CN")
        self._person("LEGAL-1", "legal", region=None, manager="EXEC-GM", locale="zh_CN")
        self._person("ADMIN-1", "admin", region=None, manager="EXEC-GM", locale="en")
        for r, (code, _name, _cities, _share, n_reps) in enumerate(REGIONS):
            manager = f"RM-{code}"
            locale = "en" if r == 1 else "zh_CN"
            self._person(manager, "regional_manager", region=r, manager="EXEC-GM", locale=locale)
            self.managers[r] = manager
            for i in range(1, n_reps + 1):
                key = f"REP-{code}-{i}"
                locale = "en" if rng.randrange(4) == 0 else "zh_CN"
                self._person(key, "rep", region=r, manager=manager, locale=locale)
                self.reps.append(key)
                self.rep_region.append(r)

    # customers ------------------------------------------------------------------------------

    def _company_name(self, city: str, industry: str) -> str:
        rng = self.rng
        while True:
            suffix = "股份有限公司" if rng.randrange(8) == 0 else "有限公司"
            name = f"{city}{rng.choice(COMPANY_WORDS)}{industry}{suffix}"
            if name not in self._names:
                self._names.add(name)
                return name

    def plan_customers(self, n: int) -> None:
        rng, as_of = self.rng, self.as_of
        ratings = [r for r, k in _quotas(RATING_SHARES, n).items() for _ in range(k)]
        rng.shuffle(ratings)
        region_weights = [share for *_, share, _reps in REGIONS]
        for i, rating in enumerate(ratings):
            region = rng.choices(range(len(REGIONS)), weights=region_weights)[0]
            city = rng.choice(REGIONS[region][2])
            usd = rating in "ABC" and rng.randrange(25) == 0
            name = self._company_name(city, "进出口" if usd else rng.choice(INDUSTRIES))
            reps = [k for k, reg in enumerate(self.rep_region) if reg == region]
            terms = rng.choices(TERMS, weights=TERMS_WEIGHTS[rating])[0]
            limit = 0
            if rating in LIMITS_CNY:
                lo, hi, step = LIMITS_CNY[rating]
                limit = rng.randrange(lo, hi + 1, step)
                if usd:
                    limit = limit // 7 // 10_000 * 10_000
            self.customers.append(
                _Customer(
                    code=f"C{i + 1:04d}",
                    name=name,
                    region=region,
                    rep=rng.choice(reps),
                    rating=rating,
                    currency="USD" if usd else "CNY",
                    terms=terms,
                    limit=Decimal(limit).quantize(Decimal("0.01")),
                    weight=VOLUME[rating] * rng.randint(5, 15),
                )
            )
        # The newest customers (highest codes) are still on probation: cash before delivery.
        probation_days = self.settings.policy.probation_months * 3044 // 100
        wanted = n * 6 // 100
        if probation_days >= 2:
            for c in reversed(self.customers):
                if wanted == 0:
                    break
                if c.rating in "BCD" and c.currency == "CNY":
                    c.onboarded = as_of - timedelta(
                        days=rng.randint(max(1, probation_days * 2 // 5), probation_days - 1)
                    )
                    c.probation_until = c.onboarded + timedelta(days=probation_days)
                    c.terms, c.limit = 30, Decimal("0.00")
                    wanted -= 1

    # invoices -------------------------------------------------------------------------------

    def _categories(self) -> dict[str, tuple[str, Tier | None, int]]:
        """category -> (class, tier or None, share) with every tier of the table present."""
        per_class: dict[str, list[Tier]] = {}
        for tier in self.tiers:
            per_class.setdefault(_tier_class(tier), []).append(tier)
        out: dict[str, tuple[str, Tier | None, int]] = {
            "paid": ("paid", None, CLASS_SHARE["paid"]),
            "future": ("future", None, CLASS_SHARE["future"]),
        }
        for klass, tiers in per_class.items():
            for tier in tiers:
                out[tier.name] = (klass, tier, max(1, CLASS_SHARE[klass] // len(tiers)))
        return out

    def _amount_cents(self, c: _Customer) -> int:
        lo, hi = self.rng.choices(AMOUNT_BRACKETS, weights=AMOUNT_WEIGHTS[c.rating])[0]
        if c.currency == "USD":
            lo, hi = lo // 7, hi // 7
        return self.rng.randint(lo * 100, hi * 100)

    def _due_date(self, category: str, tier: Tier | None, c: _Customer) -> date:
        rng, as_of = self.rng, self.as_of
        if tier is not None:
            earliest, latest = tier.due_date_range(as_of)
            if earliest is None:
                earliest = latest - timedelta(days=365)
            return earliest + timedelta(days=rng.randint(0, (latest - earliest).days))
        if category == "future":  # due after the first tier's window, issued by as_of if possible
            ahead = 1 - self.tiers[0].min_days
            return as_of + timedelta(days=rng.randint(ahead, max(ahead, c.terms)))
        if c.onboarded is not None:  # paid: a probation customer's history is short
            span = max(0, (as_of - c.onboarded).days - c.terms)
            return c.onboarded + timedelta(days=c.terms + rng.randint(0, span))
        return as_of + timedelta(days=rng.randint(-600, 25))

    def _weights(self, klass: str, category: str) -> list[int]:
        future_ahead = 1 - self.tiers[0].min_days
        weights = []
        for c in self.customers:
            w = AFFINITY[klass][c.rating] * c.weight
            if c.onboarded is not None and klass not in ("paid", "future", "current", "early"):
                w = 0
            if category == "future" and c.terms < future_ahead:
                w = 0  # its invoices cannot be that far from due yet (issued after as_of)
            weights.append(w)
        if not any(weights):
            weights = [c.weight for c in self.customers]
        return weights

    def plan_invoices(self, n: int) -> None:
        rng = self.rng
        categories = self._categories()
        counts = _quotas({k: share for k, (_c, _t, share) in categories.items()}, n)
        for category, (klass, tier, _share) in categories.items():
            weights = self._weights(klass, category)
            chosen = rng.choices(range(len(self.customers)), weights=weights, k=counts[category])
            for ci in chosen:
                c = self.customers[ci]
                due = self._due_date(category, tier, c)
                amount = self._amount_cents(c)
                inv = _Invoice(
                    customer=ci,
                    category=category,
                    klass=klass,
                    issue_date=due - timedelta(days=c.terms),
                    due_date=due,
                    amount_cents=amount,
                    open_cents=amount,
                )
                if klass == "paid":
                    self._pay_in_full(inv, c)
                else:
                    self._open_details(inv, c)
                self.invoices.append(inv)

    def _pay_in_full(self, inv: _Invoice, c: _Customer) -> None:
        rng, as_of = self.rng, self.as_of
        lo, hi = PAY_DELAY[c.rating]
        if c.onboarded is not None:  # cash before delivery
            lo, hi = -c.terms, -c.terms + 3
        paid_on = inv.due_date + timedelta(days=rng.randint(lo, hi))
        paid_on = max(inv.issue_date, min(as_of, paid_on))
        if rng.randrange(7) == 0 and (paid_on - inv.issue_date).days > 10:
            first = inv.amount_cents * rng.randint(30, 70) // 100 // 100 * 100
            early = paid_on - timedelta(days=rng.randint(5, (paid_on - inv.issue_date).days))
            inv.payments = [(early, first), (paid_on, inv.amount_cents - first)]
        else:
            inv.payments = [(paid_on, inv.amount_cents)]
        inv.open_cents = 0
        if paid_on > inv.due_date + timedelta(days=15) and rng.randrange(4) == 0:
            promised = paid_on - timedelta(days=rng.randint(0, 5))
            created = _at(max(inv.due_date, promised - timedelta(days=rng.randint(5, 20))), 10)
            note = rng.choice(PROMISE_NOTES)
            inv.promises.append(
                _Promise(promised, inv.amount_cents, "kept", note, self.reps[c.rep], created)
            )

    def _open_details(self, inv: _Invoice, c: _Customer) -> None:
        rng, as_of = self.rng, self.as_of
        if rng.randrange(1000) < DISPUTE_PERMILLE[inv.klass]:
            inv.disputed, inv.dispute_reason = True, rng.choice(DISPUTE_REASONS)
        if rng.randrange(1000) < PARTIAL_PERMILLE[inv.klass] and inv.issue_date < as_of:
            paid = inv.amount_cents * rng.randint(10, 80) // 100 // 100 * 100
            if 0 < paid < inv.amount_cents:
                span = (as_of - inv.issue_date).days
                days = sorted(rng.randint(1, span) for _ in range(rng.choice((1, 1, 2))))
                if len(days) == 2:
                    first = paid // 2 // 100 * 100 or paid
                    parts = [first, paid - first] if first < paid else [paid]
                else:
                    parts = [paid]
                inv.payments = [
                    (inv.issue_date + timedelta(days=d), part)
                    for d, part in zip(days, parts, strict=False)
                ]
                inv.open_cents = inv.amount_cents - sum(p for _, p in inv.payments)
        if rng.randrange(1000) < PROMISE_PERMILLE.get(inv.klass, 0):
            if inv.klass in ("late", "legal") and rng.randrange(3) == 0:
                days_overdue = (as_of - inv.due_date).days
                if days_overdue > 40:  # an earlier promise that was not kept
                    promised = inv.due_date + timedelta(days=rng.randint(10, days_overdue - 30))
                    created = _at(promised - timedelta(days=rng.randint(3, 10)), 10)
                    note = rng.choice(PROMISE_NOTES)
                    inv.promises.append(
                        _Promise(
                            promised, inv.open_cents, "broken", note, self.reps[c.rep], created
                        )
                    )
            # Promised around as_of; one already past looks broken. Never before the due date.
            promised = max(inv.due_date, as_of + timedelta(days=rng.randint(-21, 30)))
            made = min(promised, as_of) - timedelta(days=rng.randint(2, 20))
            created = _at(max(inv.due_date, made), 10)
            amount = inv.open_cents
            if rng.randrange(3) == 0:
                amount = max(100, inv.open_cents * rng.randint(30, 90) // 100 // 100 * 100)
            recorder = self.reps[c.rep] if rng.randrange(5) else self.managers[c.region]
            note = rng.choice(PROMISE_NOTES)
            inv.promises.append(_Promise(promised, amount, "open", note, recorder, created))

    # finishing touches ----------------------------------------------------------------------

    def plan_credit_holds(self) -> None:
        rng, as_of = self.rng, self.as_of
        oldest: dict[int, int] = {}
        for inv in self.invoices:
            if inv.open_cents > 0:
                days = (as_of - inv.due_date).days
                oldest[inv.customer] = max(oldest.get(inv.customer, days), days)
        for i, c in enumerate(self.customers):
            worst = oldest.get(i, -1)
            hold = (
                c.rating == "H"
                or (c.rating == "X" and worst >= 60 and rng.randrange(10) < 6)
                or (c.rating == "D" and worst >= 90 and rng.randrange(10) < 3)
            )
            if hold:
                since = as_of - timedelta(days=rng.randint(3, max(3, worst - 60)))
                c.credit_hold, c.hold_reason = True, HOLD_REASONS[c.rating]
                c.hold_since = _at(since, 9)

    def number_invoices(self) -> None:
        """INV-<issue year>-<sequence>, numbered in issue order as a billing system would."""
        order = sorted(range(len(self.invoices)), key=lambda i: (self.invoices[i].issue_date, i))
        seq: dict[int, int] = {}
        for i in order:
            inv = self.invoices[i]
            year = inv.issue_date.year
            seq[year] = seq.get(year, 0) + 1
            inv.number = f"INV-{year}-{seq[year]:06d}"


def build_demo_ledger(
    session: Session,
    *,
    as_of: date,
    seed: int = 7,
    settings: Settings,
    customers: int = 300,
    invoices: int = 5000,
) -> DemoSummary:
    """Write the demo ledger into an empty schema; the same seed and as_of give the same book."""
    if customers < len(RATINGS):
        raise ValueError(f"the demo needs at least {len(RATINGS)} customers (one per rating)")
    plan = _Planner(random.Random(seed), as_of, settings)
    plan.plan_people()
    plan.plan_customers(customers)
    plan.plan_invoices(invoices)
    plan.plan_credit_holds()
    plan.number_invoices()

    region_ids = _insert_returning_ids(
        session, Region, [{"code": code, "name": name} for code, name, *_ in REGIONS]
    )

    # People level by level (managers before the people who report to them), ids in plan order.
    person_ids: dict[str, int] = {}
    pending = list(plan.people)
    while pending:
        ready = [p for p in pending if p.manager is None or p.manager in person_ids]
        rows: list[dict[str, object]] = [
            {
                "code": p.code,
                "name": p.name,
                "role": p.role,
                "region_id": None if p.region is None else region_ids[p.region],
                "manager_id": None if p.manager is None else person_ids[p.manager],
                "email": p.email,
                "slack_user_id": p.slack_user_id,
                "telegram_chat_id": p.telegram_chat_id,
                "locale": p.locale,
                "time_zone": "Asia/Shanghai",
                "active": True,
            }
            for p in ready
        ]
        ids = _insert_returning_ids(session, Person, rows)
        person_ids.update((p.code, pid) for p, pid in zip(ready, ids, strict=True))
        pending = [p for p in pending if p.code not in person_ids]

    customer_ids = _insert_returning_ids(
        session,
        Customer,
        [
            {
                "code": c.code,
                "name": c.name,
                "region_id": region_ids[c.region],
                "rep_id": person_ids[plan.reps[c.rep]],
                "rating": c.rating,
                "credit_limit": c.limit,
                "currency": c.currency,
                "payment_terms_days": c.terms,
                "credit_hold": c.credit_hold,
                "credit_hold_reason": c.hold_reason,
                "credit_hold_since": c.hold_since,
                "credit_hold_source": "manual" if c.credit_hold else None,
                "probation_until": c.probation_until,
                "blacklisted": c.rating == "H",
            }
            for c in plan.customers
        ],
    )

    ordered = sorted(plan.invoices, key=lambda inv: inv.number)
    invoice_ids = _insert_returning_ids(
        session,
        Invoice,
        [
            {
                "number": inv.number,
                "customer_id": customer_ids[inv.customer],
                "issue_date": inv.issue_date,
                "due_date": inv.due_date,
                "amount": _cents(inv.amount_cents),
                "open_amount": _cents(inv.open_cents),
                "currency": plan.customers[inv.customer].currency,
                "disputed": inv.disputed,
                "dispute_reason": inv.dispute_reason,
            }
            for inv in ordered
        ],
    )

    payments = sorted(
        (
            (paid_on, inv.number, k, cents, invoice_id, inv.customer)
            for inv, invoice_id in zip(ordered, invoice_ids, strict=True)
            for k, (paid_on, cents) in enumerate(inv.payments)
        ),
    )
    pay_seq: dict[int, int] = {}
    payment_rows = []
    for paid_on, _number, _k, cents, invoice_id, ci in payments:
        pay_seq[paid_on.year] = pay_seq.get(paid_on.year, 0) + 1
        payment_rows.append(
            {
                "reference": f"PAY-{paid_on.year}-{pay_seq[paid_on.year]:06d}",
                "customer_id": customer_ids[ci],
                "invoice_id": invoice_id,
                "paid_on": paid_on,
                "amount": _cents(cents),
                "currency": plan.customers[ci].currency,
            }
        )
    if payment_rows:
        session.exec(insert(Payment), params=payment_rows)  # type: ignore[call-overload]

    promise_rows = [
        {
            "invoice_id": invoice_id,
            "promised_date": ptp.promised_date,
            "amount": _cents(ptp.amount_cents),
            "currency": plan.customers[inv.customer].currency,
            "note": ptp.note,
            "recorded_by_id": person_ids[ptp.recorded_by],
            "status": ptp.status,
            "broken_on": (
                ptp.promised_date + timedelta(days=settings.reminders.promise_grace_days + 1)
                if ptp.status == "broken"
                else None
            ),
            "created_at": ptp.created_at,
        }
        for inv, invoice_id in zip(ordered, invoice_ids, strict=True)
        for ptp in inv.promises
    ]
    if promise_rows:
        session.exec(insert(PromiseToPay), params=promise_rows)  # type: ignore[call-overload]
    session.flush()

    open_count = sum(1 for inv in plan.invoices if inv.open_cents > 0)
    return DemoSummary(
        regions=len(region_ids),
        people=len(plan.people),
        reps=len(plan.reps),
        customers=len(plan.customers),
        invoices=len(plan.invoices),
        open_invoices=open_count,
        paid_invoices=len(plan.invoices) - open_count,
        disputed=sum(1 for inv in plan.invoices if inv.disputed),
        promises=len(promise_rows),
        payments=len(payment_rows),
    )


def _insert_returning_ids(
    session: Session,
    model: type[Region] | type[Person] | type[Customer] | type[Invoice],
    rows: list[dict[str, object]],
) -> list[int]:
    """Bulk INSERT (one round trip per batch) returning the new ids in the rows' order."""
    if not rows:
        return []
    stmt = insert(model).returning(model.id, sort_by_parameter_order=True)
    return list(session.exec(stmt, params=rows).scalars())  # type: ignore[call-overload]
