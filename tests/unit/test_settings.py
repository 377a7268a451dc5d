"""Settings are validated once: impossible values fail with every problem named."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import load_settings


def test_defaults_are_the_embedded_mode() -> None:
    s = load_settings()
    assert s.kafka_bootstrap_servers is None and s.mongodb_uri is None
    assert s.http_port == 8000


def test_environment_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRIDOR_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8, 10.0.0.0/8")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("MONGODB_URI", "mongodb://m:27017/")
    monkeypatch.setenv("CORRIDOR_DELIVERY_RETRY_SCHEDULE_S", "1,2.5,10")
    s = load_settings()
    assert s.allow_private_networks == ["127.0.0.0/8", "10.0.0.0/8"]
    assert s.kafka_bootstrap_servers == "k:9092"
    assert s.mongodb_uri is not None and s.mongodb_uri.get_secret_value() == "mongodb://m:27017/"
    assert s.retry_delays_s == [1.0, 2.5, 10.0]


def test_placeholder_key_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRIDOR_ENV", "production")
    with pytest.raises(ConfigError, match="CORRIDOR_API_KEY") as both:
        load_settings()
    assert "CORRIDOR_LINK_SECRET" in str(both.value), "both placeholders named at once"
    monkeypatch.setenv("CORRIDOR_API_KEY", "a-real-secret-of-enough-length")
    with pytest.raises(ConfigError, match="CORRIDOR_LINK_SECRET"):
        load_settings()
    monkeypatch.setenv("CORRIDOR_LINK_SECRET", "another-real-secret")
    assert load_settings().env == "production"


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("CORRIDOR_ALLOW_PRIVATE_NETWORKS", "not-a-cidr", "not a CIDR"),
        ("CORRIDOR_HTTP_PORT", "99999", "CORRIDOR_HTTP_PORT: Input should be less than or equal to 65535"),
        ("CORRIDOR_DELIVERY_RETRY_SCHEDULE_S", "5,-1", "0 to 604800 seconds"),
        # Review of 2026-12-05: "inf" passed every lower bound, then crashed the start (int(inf))
        # or was stored as a source's null interval, which broke every later start; an empty
        # schedule dead-lettered each alert at its first failure; a 1 s poll interval was taken.
        ("CORRIDOR_DELIVERY_RETRY_SCHEDULE_S", ",", "at least one retry delay"),
        ("CORRIDOR_DELIVERY_RETRY_SCHEDULE_S", "5,nan", "finite number"),
        ("CORRIDOR_DELIVERY_LEASE_S", "inf", "CORRIDOR_DELIVERY_LEASE_S: Input should be a finite number"),
        ("CORRIDOR_POLL_INTERVAL_S", "inf", "CORRIDOR_POLL_INTERVAL_S: Input should be a finite number"),
        ("CORRIDOR_POLL_INTERVAL_S", "1", "CORRIDOR_POLL_INTERVAL_S: Input should be greater than or equal to 60"),
        ("CORRIDOR_POLL_INTERVAL_S", "1e300", "CORRIDOR_POLL_INTERVAL_S: Input should be less than or equal to 86400"),
        ("CORRIDOR_ENDPOINT_DISABLE_AFTER_S", "nan", "CORRIDOR_ENDPOINT_DISABLE_AFTER_S: Input should be a finite"),
        ("CORRIDOR_POLL_LEASE_S", "1e9", "CORRIDOR_POLL_LEASE_S: Input should be less than or equal to 7200"),
        ("CORRIDOR_FETCH_MAX_BYTES", "10", "CORRIDOR_FETCH_MAX_BYTES"),
        ("CORRIDOR_PUBLIC_BASE_URL", "notaurl", "CORRIDOR_PUBLIC_BASE_URL must be an http"),
        ("CORRIDOR_FEEDS", "https://ok.example/rss,ftp://x", "CORRIDOR_FEEDS entry 2 is not"),
        ("MONGODB_URI", "notamongo://x", "MONGODB_URI must be a mongodb://"),
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:notaport", "KAFKA_BOOTSTRAP_SERVERS must be host"),
        ("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,host:", "got 'host:'"),
        ("KAFKA_BOOTSTRAP_SERVERS", "[::1", "got '\\[::1'"),
        ("CORRIDOR_SMTP_TLS", "true", "mutually exclusive"),  # with STARTTLS, set below
    ],
)
def test_invalid_values_fail_at_start(monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str) -> None:
    monkeypatch.setenv(var, value)
    if var == "CORRIDOR_SMTP_TLS":
        monkeypatch.setenv("CORRIDOR_SMTP_STARTTLS", "true")
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_secrets_are_masked_in_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRIDOR_API_KEY", "super-secret-value")
    s = load_settings()
    assert "super-secret-value" not in repr(s) and "super-secret-value" not in s.model_dump_json()


@pytest.mark.parametrize("env", ["development", "production"])
def test_an_empty_admin_key_is_refused_everywhere(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    # An empty key matched an empty bearer token: `Authorization: Bearer ` could write.
    monkeypatch.setenv("CORRIDOR_ENV", env)
    monkeypatch.setenv("CORRIDOR_API_KEY", "")
    monkeypatch.setenv("CORRIDOR_LINK_SECRET", "x" * 32)
    with pytest.raises(ConfigError, match="CORRIDOR_API_KEY must not be empty"):
        load_settings()


def test_short_secrets_and_every_rule_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRIDOR_ENV", "production")
    monkeypatch.setenv("CORRIDOR_API_KEY", "k")
    monkeypatch.setenv("CORRIDOR_READ_API_KEYS", "r," + "r" * 20)
    monkeypatch.setenv("CORRIDOR_POLL_LEASE_S", "30")
    monkeypatch.setenv("CORRIDOR_FETCH_DEADLINE_S", "60")
    monkeypatch.setenv("CORRIDOR_FETCH_TIMEOUT_S", "90")
    with pytest.raises(ConfigError) as problems:
        load_settings()
    message = str(problems.value)
    for needle in (
        "CORRIDOR_API_KEY must have at least 16 characters",
        "CORRIDOR_LINK_SECRET (signs unsubscribe links) must be set to a real secret",
        "a key of CORRIDOR_READ_API_KEYS must have at least 16",
        "CORRIDOR_FETCH_DEADLINE_S (60.0) must be at least CORRIDOR_FETCH_TIMEOUT_S",
        "CORRIDOR_POLL_LEASE_S (30.0) must be at least twice",
    ):
        assert needle in message, message
    assert "r" * 20 not in message, "secrets are never echoed"


def test_a_mongodb_uri_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", "postgres://user:hunter2-secret@db/x")
    with pytest.raises(ConfigError) as problems:
        load_settings()
    assert "hunter2" not in str(problems.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("  ", None),
        ("k1:9092, k2:9092,", "k1:9092,k2:9092"),
        ("kafka", "kafka"),
        ("[::1]", "[::1]"),
        ("::1", "::1"),  # aiokafka reads a bare IPv6 address too
    ],
)
def test_broker_lists_that_worked_before_still_do(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", value)
    assert load_settings().kafka_bootstrap_servers == expected
