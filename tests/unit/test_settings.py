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
    with pytest.raises(ConfigError, match="CORRIDOR_API_KEY"):
        load_settings()
    monkeypatch.setenv("CORRIDOR_API_KEY", "a-real-secret")
    with pytest.raises(ConfigError, match="CORRIDOR_LINK_SECRET"):
        load_settings()
    monkeypatch.setenv("CORRIDOR_LINK_SECRET", "another-real-secret")
    assert load_settings().env == "production"


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("CORRIDOR_ALLOW_PRIVATE_NETWORKS", "not-a-cidr", "not a CIDR"),
        ("CORRIDOR_HTTP_PORT", "99999", "http_port"),
        ("CORRIDOR_DELIVERY_RETRY_SCHEDULE_S", "5,-1", "non-negative"),
        ("CORRIDOR_FETCH_MAX_BYTES", "10", "fetch_max_bytes"),
    ],
)
def test_invalid_values_fail_at_start(monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_secrets_are_masked_in_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRIDOR_API_KEY", "super-secret-value")
    s = load_settings()
    assert "super-secret-value" not in repr(s) and "super-secret-value" not in s.model_dump_json()
