"""One settings object, read from ``config.toml`` with environment overrides.

Where the file comes from: ``--config PATH``, else ``$CREDITBOT_CONFIG``, else
``./config.toml`` when it exists, else the built-in defaults (the same values as
``config.example.toml``). Any key can be overridden from the environment as
``CREDITBOT_<SECTION>__<KEY>``, e.g. ``CREDITBOT_DATABASE__URL``. A bad value is refused at
start-up with a ``ConfigError`` that names the key and the reason.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from credit.aging import (
    DEFAULT_BUCKET_EDGES,
    ROLES,
    Bucket,
    Tier,
    TierConfigError,
    TierTable,
    default_tiers,
    make_buckets,
)
from credit.approval import AuthorityLevel, AuthorityMatrix, default_matrix
from credit.money import MoneyError, parse_amount

ENV_PREFIX = "CREDITBOT_"
CONFIG_ENV = "CREDITBOT_CONFIG"
DEFAULT_CONFIG_FILE = "config.toml"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str = "sqlite:///./creditbot.db"
    busy_timeout_ms: int = Field(5000, ge=0)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_engine(cls, url: str) -> str:
        if not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError(
                "must be a sqlite:/// path or a postgresql:// URL "
                "(e.g. postgresql+psycopg://user@host:5432/db)"
            )
        return url


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Asia/Shanghai)"
        ) from None
    return name


class CalendarSettings(_Section):
    timezone: str = "Asia/Shanghai"
    holiday_country: str = "CN"
    send_window_start: time = time(8, 0)
    send_window_end: time = time(19, 0)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        return _check_zone(name)

    @field_validator("holiday_country")
    @classmethod
    def _country(cls, code: str) -> str:
        import holidays

        code = code.upper()
        if code not in holidays.list_supported_countries():
            raise ValueError(f"the holidays package does not know country {code!r}")
        return code

    @model_validator(mode="after")
    def _window(self) -> CalendarSettings:
        if self.send_window_end <= self.send_window_start:
            raise ValueError("send_window_end must be after send_window_start")
        return self


class ScheduleSettings(_Section):
    scan_at: time = time(8, 30)
    digest_at: time = time(9, 0)
    credit_hold_review_at: time = time(8, 0)
    dispatch_every_seconds: int = Field(5, ge=1, le=3600)
    misfire_grace_seconds: int = Field(6 * 3600, ge=1)


class TierSettings(_Section):
    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    min_days: int
    max_days: int | None = None
    notify: list[str]
    repeat_every_days: int = Field(ge=1)
    action: str = ""
    credit_hold: bool = False
    escalate_unacknowledged_after_days: int | None = Field(None, ge=1)

    def to_tier(self) -> Tier:
        return Tier(
            self.name,
            self.min_days,
            self.max_days,
            tuple(self.notify),
            self.repeat_every_days,
            self.action,
            credit_hold=self.credit_hold,
            escalate_unacknowledged_after_days=self.escalate_unacknowledged_after_days,
        )


def _default_tier_settings() -> list[TierSettings]:
    return [
        TierSettings(
            name=t.name,
            min_days=t.min_days,
            max_days=t.max_days,
            notify=list(t.notify),
            repeat_every_days=t.repeat_every_days,
            action=t.action,
            credit_hold=t.credit_hold,
            escalate_unacknowledged_after_days=t.escalate_unacknowledged_after_days,
        )
        for t in default_tiers().tiers
    ]


class AgingSettings(_Section):
    bucket_edges: list[int] = Field(default_factory=lambda: list(DEFAULT_BUCKET_EDGES))

    @field_validator("bucket_edges")
    @classmethod
    def _edges(cls, edges: list[int]) -> list[int]:
        try:
            make_buckets(edges)
        except TierConfigError as exc:
            raise ValueError(str(exc)) from None
        return edges


class PolicySettings(_Section):
    probation_months: int = Field(6, ge=0)
    default_currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")
    default_payment_terms_days: int = Field(30, ge=0)


class ReminderSettings(_Section):
    # days after the promised date before a promise counts as broken
    promise_grace_days: int = Field(3, ge=0)
    # invoice lines listed per tier in one message (totals always cover all of them)
    lines_per_tier: int = Field(5, ge=1, le=50)


class OutboxSettings(_Section):
    max_attempts: int = Field(8, ge=1, le=100)
    backoff_base_seconds: float = Field(30.0, gt=0)
    backoff_cap_seconds: float = Field(3600.0, gt=0)
    lease_seconds: int = Field(120, ge=5)
    batch_size: int = Field(200, ge=1, le=10_000)
    # where messages go: "console" prints; "slack" and "telegram" come with their settings
    channels: list[str] = Field(default_factory=lambda: ["console"])
    # pacing: at most this many messages per second overall, per channel …
    global_per_second: float = Field(25.0, gt=0)
    # … and at least this many seconds between two messages to one recipient
    per_recipient_interval_seconds: float = Field(1.0, ge=0)


# Values copied from documentation or templates instead of a real secret.
_PLACEHOLDERS = {
    "changeme", "change-me", "change_me", "replaceme", "replace-me", "todo", "tbd", "secret",
    "token", "your-token", "your_token", "xxx", "...", "…", "<token>", "<secret>",
}  # fmt: skip


def _is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    if v in _PLACEHOLDERS or set(v) <= {".", "…", "x", "*", "-"}:
        return True
    bare = v.removeprefix("xoxb-").removeprefix("xapp-").replace("_", "-")
    return (
        bare in _PLACEHOLDERS
        or bare.startswith(("your-", "<"))
        or "changeme" in bare.replace("-", "")
        or set(bare) <= {".", "…", "x", "*", "-"}
    )


class SlackSettings(_Section):
    # secrets: prefer the environment (CREDITBOT_SLACK__BOT_TOKEN, …) to the file
    bot_token: SecretStr = SecretStr("")  # xoxb-…: chat.postMessage, chat.update
    signing_secret: SecretStr = SecretStr("")  # verifies requests from Slack (interactivity)
    app_token: SecretStr = SecretStr("")  # xapp-…: Socket Mode (optional)
    api_base_url: str = "https://slack.com/api/"
    # where messages go for a recipient without a Slack user id (e.g. "#credit-desk" or C0123…)
    fallback_channel: str | None = None

    @field_validator("api_base_url")
    @classmethod
    def _base_url(cls, url: str) -> str:
        if not url.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL like https://slack.com/api/")
        return url if url.endswith("/") else url + "/"  # slack_sdk joins method names to it

    @field_validator("fallback_channel")
    @classmethod
    def _channel(cls, channel: str | None) -> str | None:
        if channel is None:
            return None
        return channel.strip() or None


_SLACK_PREFIXES = {"bot_token": "xoxb-", "app_token": "xapp-"}


_TELEGRAM_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramSettings(_Section):
    # secrets: prefer the environment (CREDITBOT_TELEGRAM__BOT_TOKEN, …) to the file
    bot_token: SecretStr = SecretStr("")  # 123456:ABC… from BotFather
    # checked in constant time against X-Telegram-Bot-Api-Secret-Token (webhook mode)
    webhook_secret: SecretStr = SecretStr("")
    # PTB's base_url: the token and method are appended (a self-hosted Bot API server works)
    api_base_url: str = "https://api.telegram.org/bot"
    # the public HTTPS URL of /telegram/webhook, registered with setWebhook (webhook mode)
    webhook_url: str | None = None
    bot_username: str | None = None  # for t.me/<bot>?start=CODE links
    link_code_ttl_minutes: int = Field(1440, ge=1, le=60 * 24 * 30)
    # how long a button in a sent message stays usable
    callback_ttl_days: int = Field(14, ge=1, le=365)
    # our own pacing (PTB's AIORateLimiter does not pace private chats)
    per_chat_interval_seconds: float = Field(1.0, ge=0)
    group_interval_seconds: float = Field(3.0, ge=0)  # 20 a minute to a group
    global_per_second: float = Field(25.0, gt=0, le=30)

    @field_validator("api_base_url")
    @classmethod
    def _base_url(cls, url: str) -> str:
        if not url.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL like https://api.telegram.org/bot")
        return url.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        if not url.startswith("https://"):
            raise ValueError("Telegram only calls https:// webhooks")
        return url.strip()

    @field_validator("bot_username")
    @classmethod
    def _username(cls, name: str | None) -> str | None:
        return name.strip().lstrip("@") or None if name else None


def _money_or_none(value: Any) -> Decimal | None:
    """A money amount from TOML or the environment, exactly: ``"50,000.00"``, ``50000`` or
    ``50000.5`` (a TOML float is read back as the digits written, never rounded)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be an amount, not true/false")
    if isinstance(value, float):
        value = Decimal(repr(value))  # the shortest text that reads back as this float
    try:
        return parse_amount(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


# the customer's rep brings the risk in and never approves it (DESIGN.md §1)
_APPROVER_ROLES = tuple(r for r in ROLES if r != "rep")


class AuthorityLevelSettings(_Section):
    role: str
    # the largest amount over the limit this level may approve; leave out for no cap
    max_excess: Decimal | None = None
    # the largest overdue amount it may approve a shipment with; leave out for no cap
    max_overdue: Decimal | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role == "rep":
            raise ValueError("a rep never approves (whoever brings the risk in never approves it)")
        if role not in _APPROVER_ROLES:
            raise ValueError(
                f"unknown approver role {role!r}; roles are {', '.join(_APPROVER_ROLES)}"
            )
        return role

    @field_validator("max_excess", "max_overdue", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal | None:
        amount = _money_or_none(value)
        if amount is not None and amount < 0:
            raise ValueError("must not be negative")
        return amount

    def to_level(self) -> AuthorityLevel:
        return AuthorityLevel(self.role, self.max_excess, self.max_overdue)


def _default_level_settings() -> list[AuthorityLevelSettings]:
    return [
        AuthorityLevelSettings(role=lv.role, max_excess=lv.max_excess, max_overdue=lv.max_overdue)
        for lv in default_matrix().levels
    ]


class ApprovalSettings(_Section):
    # True: every level below the deciding one approves first, in order
    chain: bool = False
    # lowest authority first; the top level has no caps
    levels: list[AuthorityLevelSettings] = Field(default_factory=_default_level_settings)
    # remind the pending approver after this long …
    remind_after_hours: float = Field(4.0, gt=0)
    # … hand the request to the next level up after this long …
    escalate_after_hours: float = Field(24.0, gt=0)
    # … and let it lapse (expired, the ERP told) after this long
    expire_after_hours: float = Field(72.0, gt=0)

    @field_validator("levels")
    @classmethod
    def _levels_form_a_matrix(
        cls, levels: list[AuthorityLevelSettings]
    ) -> list[AuthorityLevelSettings]:
        try:
            AuthorityMatrix(tuple(lv.to_level() for lv in levels))
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return levels

    @model_validator(mode="after")
    def _timings(self) -> ApprovalSettings:
        if self.expire_after_hours <= self.escalate_after_hours:
            raise ValueError("expire_after_hours must be greater than escalate_after_hours")
        if self.expire_after_hours <= self.remind_after_hours:
            raise ValueError("expire_after_hours must be greater than remind_after_hours")
        return self

    @property
    def matrix(self) -> AuthorityMatrix:
        return AuthorityMatrix(tuple(lv.to_level() for lv in self.levels), chain=self.chain)


class ApiSettings(_Section):
    # how the ERP authenticates to the HTTP API (secrets: prefer the environment)
    auth: Literal["api_key", "hmac"] = "api_key"
    # X-API-Key values accepted (CREDITBOT_API__API_KEYS='["key1", "key2"]'); none: refuse all
    api_keys: list[SecretStr] = Field(default_factory=list)
    # auth = "hmac": X-Timestamp plus X-Signature: sha256=<hex of
    # HMAC-SHA256(hmac_secret, timestamp + "." + raw body)>
    hmac_secret: SecretStr = SecretStr("")
    # how far X-Timestamp may be from our clock (replay protection)
    max_clock_skew_seconds: int = Field(300, ge=1, le=3600)
    # signs the decisions we post to the ERP's callback URL
    callback_secret: SecretStr = SecretStr("")
    # how long a decision callback may take before it counts as failed (and is retried)
    callback_timeout_seconds: float = Field(10.0, gt=0, le=120)


def _percent(value: Any, index: int) -> Decimal:
    """A percentage from TOML or the environment, exactly: ``5``, ``"2.5"`` or ``2.5``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"item {index}: must be a number of percent (5 means 5 %), got {value!r}")
    text = repr(value) if isinstance(value, float) else str(value).strip().removesuffix("%")
    try:
        pct = Decimal(text.strip())
    except ArithmeticError:
        raise ValueError(f"item {index}: not a number: {value!r}") from None
    if not pct.is_finite() or pct < 0 or pct > 100:
        raise ValueError(f"item {index}: must be between 0 and 100 percent, got {value!r}")
    if pct != pct.quantize(Decimal("0.0001")):
        raise ValueError(f"item {index}: at most four decimals, got {value!r}")
    return pct


# the ratings of DESIGN.md §1 (credit.ratings.Rating)
_RATING_LETTERS = ("A", "B", "C", "D", "X", "H")
# reps get their own short "your day"; regional managers get their region's digest
_NOT_COMPANY_ROLES = {
    "rep": "reps get their own 'your day' digest (see digest.send_to_reps)",
    "regional_manager": "regional managers get their region's digest",
}


class DigestSettings(_Section):
    # bad-debt provision rate, in percent, per aging bucket of [aging] bucket_edges (one per
    # bucket: current, 1-30, 31-60, 61-90, 91-180, >180 by default)
    provision_percent: list[Decimal] = Field(
        default_factory=lambda: [Decimal(p) for p in ("0", "2", "5", "10", "30", "60")]
    )
    # customers with these ratings (and blacklisted ones) are provided for in full (100 %)
    specific_provision_ratings: list[str] = Field(default_factory=lambda: ["H"])
    # customers listed in "top overdue" (and in the specific provision list)
    top_customers: int = Field(10, ge=1, le=100)
    # days of history in the overdue trend (from the daily aging snapshots)
    trend_days: int = Field(30, ge=2, le=366)
    # who gets the company-wide digest with the per-region table
    company_roles: list[str] = Field(
        default_factory=lambda: ["credit_manager", "finance", "executive"]
    )
    # reps get a short "your day" (promises due, invoices entering a tier, their requests)
    send_to_reps: bool = True

    @field_validator("provision_percent", mode="before")
    @classmethod
    def _percents(cls, values: Any) -> list[Decimal]:
        if not isinstance(values, list | tuple):
            raise ValueError("must be a list of percentages, one per aging bucket")
        return [_percent(v, i) for i, v in enumerate(values)]

    @field_validator("specific_provision_ratings")
    @classmethod
    def _ratings(cls, ratings: list[str]) -> list[str]:
        ratings = [r.strip().upper() for r in ratings]
        unknown = [r for r in ratings if r not in _RATING_LETTERS]
        if unknown:
            raise ValueError(
                f"unknown rating(s) {', '.join(map(repr, unknown))}; "
                f"ratings are {', '.join(_RATING_LETTERS)}"
            )
        return list(dict.fromkeys(ratings))

    @field_validator("company_roles")
    @classmethod
    def _roles(cls, roles: list[str]) -> list[str]:
        for role in roles:
            if role in _NOT_COMPANY_ROLES:
                raise ValueError(f"{role!r} cannot be a company role: {_NOT_COMPANY_ROLES[role]}")
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        return list(dict.fromkeys(roles))


class LoggingSettings(_Section):
    # "json": one JSON object per line (for a log collector), secrets redacted; "text": for a
    # terminal. Secrets are redacted in both.
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ReplicaSettings(_Section):
    # Several `creditbot run` processes may share one PostgreSQL database. All of them
    # dispatch the outbox and serve HTTP; one, the leader, runs the scheduled scans, digests,
    # credit-hold reviews and approval follow-ups. The leader holds a session-level PostgreSQL
    # advisory lock with this key; the others try to take it every `leader_check_seconds`
    # (the holder's death releases it at once). SQLite: one process, always the leader.
    leader_lock_key: int = Field(0x43524544, ge=-(2**63), le=2**63 - 1)
    leader_check_seconds: float = Field(2.0, gt=0, le=60)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    calendar: CalendarSettings = Field(default_factory=CalendarSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    tiers: list[TierSettings] = Field(default_factory=_default_tier_settings)
    aging: AgingSettings = Field(default_factory=AgingSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    digest: DigestSettings = Field(default_factory=DigestSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    replicas: ReplicaSettings = Field(default_factory=ReplicaSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @field_validator("tiers")
    @classmethod
    def _tiers_form_a_table(cls, tiers: list[TierSettings]) -> list[TierSettings]:
        try:
            TierTable(tuple(t.to_tier() for t in tiers))
        except TierConfigError as exc:
            raise ValueError(str(exc)) from None
        return tiers

    @model_validator(mode="after")
    def _slack_secrets(self) -> Settings:
        """Placeholders are never accepted; empty secrets only while Slack is not in use."""
        problems = []
        in_use = "slack" in self.outbox.channels
        for key in ("bot_token", "signing_secret", "app_token"):
            value = getattr(self.slack, key).get_secret_value()
            if not value:
                if in_use and key != "app_token":  # the app token is for Socket Mode only
                    problems.append(
                        f"slack.{key}: required because 'slack' is in outbox.channels "
                        f"(set it in [slack] or CREDITBOT_SLACK__{key.upper()})"
                    )
            elif _is_placeholder(value):
                problems.append(
                    f"slack.{key}: looks like a placeholder, not a real secret "
                    "(copy it from the Slack app's settings)"
                )
            elif key in _SLACK_PREFIXES and not value.startswith(_SLACK_PREFIXES[key]):
                problems.append(f"slack.{key}: must start with {_SLACK_PREFIXES[key]}")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @model_validator(mode="after")
    def _telegram_secrets(self) -> Settings:
        problems = []
        token = self.telegram.bot_token.get_secret_value()
        if not token:
            if "telegram" in self.outbox.channels:
                problems.append(
                    "telegram.bot_token: required because 'telegram' is in outbox.channels "
                    "(set it in [telegram] or CREDITBOT_TELEGRAM__BOT_TOKEN)"
                )
        elif _is_placeholder(token) or not _TELEGRAM_TOKEN.match(token):
            problems.append(
                "telegram.bot_token: not a bot token (BotFather gives one like "
                "123456789:AA… — digits, a colon, then letters, digits, _ and -)"
            )
        secret = self.telegram.webhook_secret.get_secret_value()
        if secret and (_is_placeholder(secret) or not _WEBHOOK_SECRET.match(secret)):
            problems.append(
                "telegram.webhook_secret: 1–256 characters of A-Z a-z 0-9 _ - "
                "(and not a placeholder)"
            )
        if self.telegram.webhook_url and not secret:
            problems.append("telegram.webhook_secret: required when telegram.webhook_url is set")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @model_validator(mode="after")
    def _api_secrets(self) -> Settings:
        """Placeholders are never accepted; the HMAC secret is required for auth = "hmac"."""
        problems = []
        for index, key in enumerate(self.api.api_keys):
            value = key.get_secret_value()
            if not value.strip():
                problems.append(f"api.api_keys.{index}: empty (leave it out of the list)")
            elif _is_placeholder(value):
                problems.append(
                    f"api.api_keys.{index}: looks like a placeholder, not a real key "
                    "(generate one with python -c 'import secrets; print(secrets.token_hex())')"
                )
        for key in ("hmac_secret", "callback_secret"):
            value = getattr(self.api, key).get_secret_value()
            if value and _is_placeholder(value):
                problems.append(f"api.{key}: looks like a placeholder, not a real secret")
        if self.api.auth == "hmac" and not self.api.hmac_secret.get_secret_value():
            problems.append(
                'api.hmac_secret: required because api.auth = "hmac" '
                "(set it in [api] or CREDITBOT_API__HMAC_SECRET)"
            )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @model_validator(mode="after")
    def _provision_per_bucket(self) -> Settings:
        """One provision rate per aging bucket ([aging] bucket_edges gives n + 1 buckets)."""
        buckets = make_buckets(self.aging.bucket_edges)
        given = len(self.digest.provision_percent)
        if given != len(buckets):
            raise ValueError(
                f"digest.provision_percent: {len(buckets)} rates needed, one per aging bucket "
                f"({', '.join(b.label for b in buckets)}), got {given}"
            )
        return self

    @property
    def tier_table(self) -> TierTable:
        return TierTable(tuple(t.to_tier() for t in self.tiers))

    @property
    def buckets(self) -> tuple[Bucket, ...]:
        return make_buckets(self.aging.bucket_edges)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.calendar.timezone)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read, or None for the built-in defaults."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.exists() else None


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config.example.toml)"
        shown = err.get("input")
        got = "" if isinstance(shown, dict | list) or shown is None else f" (got {shown!r})"
        # whole-object checks name their keys in the message ("slack.bot_token: …")
        lines.append(f"  {key}: {msg}{got}" if key else f"  {msg}{got}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from ``path`` (or the usual places) plus the environment."""
    file = config_path(path)
    data: dict[str, Any] = {}
    source = "built-in defaults and the environment"
    if file is not None:
        source = str(file)
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
