"""`vitals simulate` arguments, the tokens file, and exit codes that need no gateway."""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.__main__ import main
from devices.cli import config_from_args, register, run_simulate, url_from_config
from devices.client import DeviceCredentials
from devices.errors import TokensFileError
from devices.simulator import read_tokens_file, write_tokens_file


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command attaches a handler to the `devices` logger; take it off again."""
    logger = logging.getLogger("devices")
    before = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = before


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["simulate", *argv])


def creds(n: int) -> list[DeviceCredentials]:
    return [
        DeviceCredentials(id=f"w{i}", patient_id=f"p{i}", ward="icu", token=f"t{i}")
        for i in range(n)
    ]


def test_simulate_is_registered_with_its_defaults() -> None:
    """`simulate` parses with the documented defaults and dispatches to run_simulate."""
    args = parse()
    assert args.func is run_simulate
    assert config_from_args(parse("--admin-token", "t")).url == "http://127.0.0.1:8080"
    assert (args.rate, args.duration, args.scenario, args.ward) == (
        1.0,
        0.0,
        "default",
        "icu",
    )
    assert args.devices is None
    assert not args.msgpack


def test_admin_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --admin-token or --tokens, $VITALS_TOKEN is the admin token."""
    monkeypatch.setenv("VITALS_TOKEN", "from-env")
    config = config_from_args(parse("--duration", "5", "--msgpack", "--seed", "3"))
    assert config.admin_token == "from-env"
    assert (config.duration, config.encoding, config.seed, config.devices) == (
        5.0,
        "msgpack",
        3,
        10,
    )


def test_missing_admin_token_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no way to get devices the command exits 2 and says what is missing."""
    monkeypatch.delenv("VITALS_TOKEN", raising=False)
    assert main(["simulate"]) == 2
    assert "need --admin-token, --tokens FILE or $VITALS_TOKEN" in capsys.readouterr().err


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --scenario exits 2 and lists the shipped scenarios."""
    assert main(["simulate", "--admin-token", "x", "--scenario", "panic"]) == 2
    assert "shipped: default, deteriorating" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--admin-token", "x", "--tokens", "f"],
        ["--rate", "0"],
        ["--devices", "0"],
        ["--duration", "-1"],
    ],
)
def test_nonsense_arguments_are_refused(argv: list[str]) -> None:
    """Exclusive sources and non-positive numbers are rejected by argparse (exit 2)."""
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2


def test_tokens_file_round_trips_and_selects_devices(tmp_path: Path) -> None:
    """A saved tokens file reads back the same devices; --devices N takes the first N."""
    path = tmp_path / "tokens.jsonl"
    write_tokens_file(path, creds(3))
    assert read_tokens_file(path) == creds(3)
    config = config_from_args(parse("--tokens", str(path), "--devices", "2"))
    assert config.credentials == tuple(creds(2))
    assert config.admin_token is None


def test_tokens_file_accepts_extra_keys_and_blank_lines(tmp_path: Path) -> None:
    """Lines as `vitals devices add --json` prints them may carry more keys; blanks are skipped."""
    path = tmp_path / "tokens.jsonl"
    path.write_text(
        '{"id": "w1", "patient_id": "p1", "ward": "icu", "token": "t", "created": "now"}\n\n'
    )
    assert [c.id for c in read_tokens_file(path)] == ["w1"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"id": "w1", "patient_id": "p1", "ward": "icu", "token": "t"}\n{"id": "w2"}\n', ":2: "),
        ("not json\n", ":1: "),
        ("", "no devices"),
        ('{"id": "w", "patient_id": "p", "token": "t"}\n' * 2, "appears twice"),
    ],
)
def test_malformed_tokens_file_names_the_line(tmp_path: Path, content: str, problem: str) -> None:
    """A broken tokens file is a TokensFileError naming the file and, where it can, the line."""
    path = tmp_path / "tokens.jsonl"
    path.write_text(content)
    with pytest.raises(TokensFileError, match=problem) as caught:
        read_tokens_file(path)
    assert str(caught.value).startswith(str(path))


def test_asking_for_more_devices_than_the_tokens_file_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--devices beyond the tokens file is a usage error, not a silent shortfall."""
    path = tmp_path / "tokens.jsonl"
    write_tokens_file(path, creds(2))
    assert main(["simulate", "--tokens", str(path), "--devices", "5"]) == 2
    assert "has only 2" in capsys.readouterr().err


def test_unreachable_gateway_retries_until_the_duration_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With nothing listening the simulator keeps retrying, then exits 1 with a summary."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["simulate", "--url", f"http://127.0.0.1:{port}", "--admin-token", "x"]
    assert main([*argv, "--duration", "0.8"]) == 1
    out, err = capsys.readouterr()
    assert "summary:" in out
    assert "unreachable" in err


def test_url_comes_from_the_gateway_settings_file(tmp_path: Path) -> None:
    """With --config and no --url, the URL is the configured host and port (https when
    the gateway serves TLS)."""
    plain, tls = tmp_path / "plain.toml", tmp_path / "tls.toml"
    plain.write_text('host = "10.0.0.5"\nport = 9001\n')
    tls.write_text('port = 9443\ncertfile = "cert.pem"\nkeyfile = "key.pem"\n')
    assert url_from_config(plain) == "http://10.0.0.5:9001"
    assert url_from_config(tls) == "https://127.0.0.1:9443"
    assert config_from_args(parse("--config", str(plain), "--admin-token", "t")).url == (
        "http://10.0.0.5:9001"
    )
