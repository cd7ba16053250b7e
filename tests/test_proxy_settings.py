"""The settings of a gateway behind a proxy, among replicas: `trusted_proxies` (CIDRs,
from TOML, a JSON list or a comma-separated environment variable) and `replica_id`."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither setting comes from the environment unless a test sets it."""
    monkeypatch.delenv("VITALS_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("VITALS_REPLICA_ID", raising=False)


def test_trusted_proxies_default_to_none() -> None:
    """Shipped default: no proxy is trusted, so forwarded headers are never read."""
    assert load_settings().trusted_proxies == ()


@pytest.mark.parametrize(
    "value",
    ["10.0.0.0/8, 127.0.0.1,::1", '["10.0.0.0/8", "127.0.0.1", "::1"]'],
    ids=["comma_separated", "json"],
)
def test_the_environment_variable_is_a_json_list_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """VITALS_TRUSTED_PROXIES in either form; a lone address is its own /32 or /128."""
    monkeypatch.setenv("VITALS_TRUSTED_PROXIES", value)

    got = load_settings().trusted_proxies

    assert got == tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "127.0.0.1/32", "::1/128"))


def test_a_bad_cidr_in_the_environment_names_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A prefix out of range is a ConfigError naming the variable, the setting and the
    value at fault."""
    monkeypatch.setenv("VITALS_TRUSTED_PROXIES", "10.0.0.0/8,10.1.0.0/33")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.startswith("environment VITALS_TRUSTED_PROXIES: trusted_proxies:")
    assert "'10.1.0.0/33' is not a network in CIDR form" in message


def test_a_bad_cidr_in_a_file_names_the_file(tmp_path: Path) -> None:
    """In a --config file the error names the file; host bits set are refused with the
    network that was probably meant."""
    config = tmp_path / "site.toml"
    config.write_text('trusted_proxies = ["10.0.0.1/8"]\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(config)

    assert str(caught.value) == (
        f"{config}: trusted_proxies: Value error, '10.0.0.1/8' has host bits set "
        "(the network is 10.0.0.0/8)"
    )


def test_a_json_list_that_does_not_parse_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VITALS_TRUSTED_PROXIES", '["10.0.0.0/8"')

    with pytest.raises(
        ConfigError, match=r"VITALS_TRUSTED_PROXIES: trusted_proxies: .*not a JSON list"
    ):
        load_settings()


def test_replica_defaults_to_hostname_and_port() -> None:
    """Without replica_id a replica is named `<hostname>:<port>`; replica_id overrides it."""
    assert load_settings(port=9001).replica == f"{socket.gethostname()}:9001"
    assert load_settings(port=9001, replica_id="ward-a-1").replica == "ward-a-1"
