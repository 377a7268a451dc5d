"""Corridor's settings: read once at the entrypoint, validated, frozen, passed down.

Every field reads the environment variable ``CORRIDOR_<FIELD>``; the two that switch to the
distributed mode also accept the conventional names ``KAFKA_BOOTSTRAP_SERVERS`` and
``MONGODB_URI``. Code under shared/ and services/ never reads the environment itself: only
:func:`load_settings`, called by the CLI, does.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigError

PLACEHOLDER_API_KEY = "change-me"
PLACEHOLDER_LINK_SECRET = "change-me-too"
MIN_SECRET_CHARS = 16  # outside development: `openssl rand -hex 24` gives 48

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All of Corridor's configuration. See README.md → Configuration for the table."""

    # No float setting may be inf or nan: "inf" passed every lower bound, then crashed the start
    # (int(inf)) or was stored as a source's null interval, which broke every later start.
    model_config = SettingsConfigDict(env_prefix="CORRIDOR_", frozen=True, extra="ignore", allow_inf_nan=False)

    env: Literal["development", "production"] = "development"
    api_key: SecretStr = SecretStr(PLACEHOLDER_API_KEY)
    read_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    public_reads: bool | None = None  # unset: public in development, key needed in production
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    public_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    # Distributed mode switches: unset means the embedded in-process bus and SQLite store.
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CORRIDOR_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    mongodb_uri: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CORRIDOR_MONGODB_URI", "MONGODB_URI")
    )
    mongodb_database: str = "corridor"
    mongodb_socket_timeout_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    query_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    dedupe_retention_days: float = Field(default=180.0, ge=1.0, le=3650.0)
    sqlite_path: Path = Path("var/corridor.sqlite3")

    topic_prefix: str = ""
    group_prefix: str = "corridor"
    topic_partitions: int = Field(default=3, ge=1, le=64)
    topic_replication_factor: int = Field(default=1, ge=1, le=5)
    # min.insync.replicas of the topics Corridor creates: with acks=all a write needs this many
    # replicas; 2 of 3 survives one broker down without losing an acknowledged message.
    topic_min_insync_replicas: int = Field(default=1, ge=1, le=5)
    bus_batch_size: int = Field(default=100, ge=1, le=10_000)
    memory_bus_max_retained: int = Field(default=10_000, ge=10, le=10_000_000)

    taxonomy_path: Path | None = None
    agreements_path: Path | None = None
    judge_path: Path | None = Field(default=None, description="judge file (default: the built-in one)")
    judge_enabled: bool = Field(
        default=True, description="false: the keyword rule decides alone; scores are keyword scores"
    )
    stall_days: int = Field(default=90, ge=1, le=3650)
    silence_days: int = Field(default=60, ge=1, le=3650)
    stall_check_s: float = Field(default=3600.0, gt=0.0, le=86400.0)

    allow_private_networks: CommaList = Field(default_factory=list)

    feeds: CommaList = Field(default_factory=list)
    poll_interval_s: float = Field(default=900.0, ge=60.0, le=86400.0)  # as a source's interval (API, CLI)
    poll_max_interval_s: float = Field(default=6 * 3600.0, ge=1.0, le=7 * 86400.0)
    poll_tick_s: float = Field(default=1.0, gt=0.0, le=60.0)
    poll_concurrency: int = Field(default=8, ge=1, le=256)
    poll_lease_s: float = Field(default=120.0, ge=1.0, le=7200.0)
    poll_per_host: int = Field(default=2, ge=1, le=64)
    poll_host_gap_s: float = Field(default=0.0, ge=0.0, le=600.0)
    gdelt_gap_s: float = Field(default=5.0, ge=0.0, le=600.0)
    source_broken_after: int = Field(default=6, ge=1, le=1000)
    load_catalogue: bool = False
    ops_email: str | None = None
    fetch_timeout_s: float = Field(default=15.0, gt=0.0, le=300.0)
    fetch_deadline_s: float = Field(default=60.0, gt=0.0, le=1800.0)
    fetch_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024**3)
    fetch_max_redirects: int = Field(default=5, ge=0, le=20)
    user_agent: str = "Corridor/0.1 (feed monitor)"

    link_secret: SecretStr = SecretStr(PLACEHOLDER_LINK_SECRET)
    endpoint_disable_after_s: float = Field(default=86400.0, ge=60.0, le=30 * 86400.0)
    secret_rotation_grace_s: float = Field(default=86400.0, ge=0.0, le=30 * 86400.0)
    email_rate_per_hour: int = Field(default=30, ge=1, le=100_000)
    webhook_timeout_s: float = Field(default=10.0, gt=0.0, le=120.0)
    delivery_retry_schedule_s: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0, 21600.0, 43200.0, 86400.0]
    )
    delivery_lease_s: float = Field(default=60.0, ge=0.5, le=3600.0)
    delivery_sweep_s: float = Field(default=2.0, gt=0.0, le=600.0)
    delivery_concurrency: int = Field(default=8, ge=1, le=256)
    # A subscription's share of the attempts in flight: a dead endpoint holds at most this many
    # slots (each up to webhook_timeout_s), the others stay free for everyone else.
    delivery_per_subscription: int = Field(default=2, ge=1, le=256)
    # Fresh alerts waiting in memory for their subscription's slot (ids only); beyond it they
    # wait in the store for the sweep.
    delivery_waiting_max: int = Field(default=10_000, ge=0, le=1_000_000)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_s: float = Field(default=15.0, gt=0.0, le=300.0)
    smtp_from: str = "Corridor <alerts@corridor.local>"

    @field_validator("kafka_bootstrap_servers", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # KAFKA_BOOTSTRAP_SERVERS= (empty) has always meant the embedded bus, as unset does; a
        # stray comma or space ("k1:9092, k2:9092,") is tidied, not refused.
        if isinstance(value, str):
            return ",".join(part.strip() for part in value.split(",") if part.strip()) or None
        return value

    @field_validator("mongodb_uri", mode="before")
    @classmethod
    def _blank_uri_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value  # as for the brokers

    @field_validator("read_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return _split_commas(value)

    _split = field_validator("allow_private_networks", "feeds", "delivery_retry_schedule_s", mode="before")(
        _split_commas
    )

    @field_validator("allow_private_networks")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a CIDR network: {cidr!r}") from exc
        return value

    @field_validator("delivery_retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if not value:
            # An empty schedule sends each alert once and dead-letters it at its first failure.
            raise ValueError("give at least one retry delay (seconds, comma-separated)")
        for delay in value:
            if not 0 <= delay <= 7 * 86400:
                raise ValueError(f"retry delays must be 0 to 604800 seconds, got {delay!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Every rule that involves more than one setting, or a setting's meaning, checked
        together so that an operator sees every problem at once."""
        found = [*self._secret_problems(), *self._link_problems(), *self._timing_problems()]
        if self.smtp_tls and self.smtp_starttls:
            # aiosmtplib refuses the pair on every message: each email would be retried to the end.
            found.append(
                "CORRIDOR_SMTP_TLS (implicit TLS, port 465) and CORRIDOR_SMTP_STARTTLS (upgrade, port 587) "
                "are mutually exclusive: set one"
            )
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            found.append(
                f"CORRIDOR_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) cannot exceed "
                f"CORRIDOR_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}): no write would ever succeed"
            )
        if found:
            raise ValueError("; ".join(found))
        return self

    def _secret_problems(self) -> list[str]:
        found = []
        keys = [("CORRIDOR_API_KEY", self.api_key, PLACEHOLDER_API_KEY)]
        keys.append(("CORRIDOR_LINK_SECRET (signs unsubscribe links)", self.link_secret, PLACEHOLDER_LINK_SECRET))
        keys += [("a key of CORRIDOR_READ_API_KEYS", key, PLACEHOLDER_API_KEY) for key in self.read_api_keys]
        # Development's placeholders are for a machine's own loopback: the image listens on
        # 0.0.0.0, and `docker run` of it in development served "change-me" to the network.
        where = (
            "outside development"
            if self.env != "development"
            else None
            if _loopback(self.http_host)
            else f"when CORRIDOR_HTTP_HOST ({self.http_host}) is not a loopback address"
        )
        for name, secret, placeholder in keys:
            value = secret.get_secret_value()
            if not value.strip():
                # An empty admin key would match an empty bearer token: anyone could write.
                found.append(f"{name} must not be empty")
            elif where and value == placeholder:
                found.append(f"{name} must be set to a real secret {where}")
            elif where and len(value) < MIN_SECRET_CHARS:
                found.append(f"{name} must have at least {MIN_SECRET_CHARS} characters {where}")
        return found

    def _link_problems(self) -> list[str]:
        found = []
        if not _http_url(self.public_base_url):
            found.append(f"CORRIDOR_PUBLIC_BASE_URL must be an http(s) URL with a host, got {self.public_base_url!r}")
        if self.mongodb_uri is not None:
            uri = self.mongodb_uri.get_secret_value()
            scheme, _, rest = uri.partition("://")
            if scheme not in ("mongodb", "mongodb+srv") or not rest.split("/", 1)[0]:
                # Not echoed: the URI may carry a password.
                found.append("MONGODB_URI must be a mongodb:// or mongodb+srv:// URI with a host")
        for n, feed in enumerate(self.feeds, 1):
            if not _http_url(feed):  # not echoed: a feed URL may carry a token in its query
                found.append(f"CORRIDOR_FEEDS entry {n} is not an absolute http(s) URL")
        for server in (self.kafka_bootstrap_servers or "").split(","):
            if server.strip() and not _broker_address(server.strip()):
                found.append(f"KAFKA_BOOTSTRAP_SERVERS must be host[:port][,host[:port]...], got {server.strip()!r}")
        return found

    def _timing_problems(self) -> list[str]:
        # A poll holds its source's lease while it fetches (at most the deadline), parses and
        # publishes; a lease shorter than twice the deadline could run out while the poll is
        # still working, and another replica would poll the same source again.
        found = []
        if self.fetch_deadline_s < self.fetch_timeout_s:
            found.append(
                f"CORRIDOR_FETCH_DEADLINE_S ({self.fetch_deadline_s}) must be at least CORRIDOR_FETCH_TIMEOUT_S "
                f"({self.fetch_timeout_s})"
            )
        if self.poll_lease_s < 2 * self.fetch_deadline_s:
            found.append(
                f"CORRIDOR_POLL_LEASE_S ({self.poll_lease_s}) must be at least twice CORRIDOR_FETCH_DEADLINE_S "
                f"({self.fetch_deadline_s})"
            )
        return found

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log filter that masks them (shared/logs.py)."""
        values = [self.api_key, *self.read_api_keys, self.link_secret, self.smtp_password]
        found = [v.get_secret_value() for v in values if v is not None]
        if self.mongodb_uri is not None:
            uri = self.mongodb_uri.get_secret_value()
            found.append(uri)
            password = urlsplit(uri).password
            if password:
                found += [password, unquote(password)]
        return found

    @property
    def reads_are_public(self) -> bool:
        """Whether read routes (events, sectors, sources, feeds) need no key."""
        return self.env == "development" if self.public_reads is None else self.public_reads

    @property
    def retry_delays_s(self) -> list[float]:
        """The webhook/email retry schedule in seconds; attempt n+1 waits ``retry_delays_s[n]``."""
        return list(self.delivery_retry_schedule_s)

    def topic(self, name: str) -> str:
        """The full topic name for a logical topic (tests give each run its own prefix)."""
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        """The consumer group id for a logical consumer."""
        return f"{self.group_prefix}.{name}"


def _broker_address(server: str) -> bool:
    """``host``, ``host:port``, a bare IPv6 address, ``[v6]`` or ``[v6]:port``, as aiokafka reads
    them (port 9092 when none is given)."""
    port = None
    if server.startswith("["):
        host, bracket, rest = server[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        port = rest[1:] if rest else None
    elif server.count(":") > 1:
        try:
            ipaddress.IPv6Address(server)
        except ValueError:
            return False
        return True
    else:
        host, colon, given = server.partition(":")
        port = given if colon else None
    return bool(host) and (port is None or (port.isdigit() and 0 < int(port) < 65536))


def _loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only ("localhost", 127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number or out of range
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # "http://[::1" (unclosed bracket), a port that is not a number
        return False


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment once; raise :class:`ConfigError` with every problem."""

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_named_problems(exc)}") from exc


def _named_problems(exc: ValidationError) -> str:
    """Each problem under the environment variable an operator sets (``CORRIDOR_HTTP_PORT``, not
    ``http_port``); the cross-setting rules name their variables in their own messages."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        if loc and loc[0] in Settings.model_fields:
            loc[0] = "CORRIDOR_" + loc[0].upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts)
