"""Gateway settings: one flat namespace, read by pydantic-settings.

Each setting has one name, used as the TOML key and (upper-cased, prefixed `VITALS_`)
as the environment variable. Precedence: command-line flag > environment >
`--config FILE` > shipped defaults (`config/gateway.toml`, found beside the code).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.errors import ConfigError

__all__ = ["ENV_PREFIX", "Network", "Settings", "load_settings", "shipped_config_dir"]

ENV_PREFIX = "VITALS_"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def shipped_config_dir() -> Path:
    """The shipped `config/` folder, wherever `vitals` runs from.

    A checkout (or editable install) has it beside the packages; a wheel carries it as
    `gateway/_shipped_config`.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "_shipped_config", here.parent / "config"):
        if (candidate / "gateway.toml").is_file():
            return candidate
    raise ConfigError(f"shipped configuration not found beside {here}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    certfile: str = ""
    keyfile: str = ""
    database_url: str = "sqlite+aiosqlite:///./var/vitals.db"
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_s: float = Field(30.0, gt=0)
    auto_migrate: bool = True
    retention_days: int = Field(0, ge=0)  # 0: readings are kept for ever
    rules_file: str = ""
    offline_after_s: float = Field(30.0, gt=0)
    max_silence_s: float = Field(120.0, gt=0)
    heartbeat_s: float = Field(30.0, gt=0)
    news2_window_s: float = Field(900.0, gt=0)
    # Readings per NDJSON file of a FHIR Bulk Data export (one download each).
    fhir_export_file_readings: int = Field(250_000, ge=1)
    # Readings per second all export downloads of the process encode together (shared:
    # it bounds the event loop's share, whatever the number of downloads); 0 = unpaced.
    fhir_export_readings_per_s: float = Field(0.0, ge=0)
    max_batch: int = Field(500, ge=1, le=100_000)
    max_frame_bytes: int = Field(262_144, ge=1024)
    commit_max_rows: int = Field(10_000, ge=1)
    commit_delay_ms: float = Field(2.0, ge=0)
    max_pending_rows: int = Field(100_000, ge=1)
    device_pipeline: int = Field(16, ge=1)
    revocation_check_s: float = Field(5.0, gt=0)
    max_readings_per_s: float = Field(1000.0, gt=0)
    rate_burst_s: float = Field(5.0, gt=0)
    rate_limit_strikes: int = Field(10, ge=1)
    max_connections: int = Field(20_000, ge=1)
    dashboard_queue_max: int = Field(1000, ge=1)
    sse_keepalive_s: float = Field(15.0, gt=0)  # a comment line on idle SSE streams
    shutdown_grace_s: float = Field(10.0, ge=0)
    auth_timeout_s: float = Field(10.0, gt=0)
    session_ttl_s: float = Field(12 * 3600, gt=0)
    allowed_origins: list[str] = []
    # Behind a reverse proxy (gateway/http/proxy.py). NoDecode: the environment variable
    # may be a JSON list or comma-separated; `_networks` reads both.
    trusted_proxies: Annotated[tuple[Network, ...], NoDecode] = ()
    replica_id: str = Field("", max_length=128)  # empty: "<hostname>:<port>" (`replica`)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Set by load_settings on a throwaway subclass: the TOML files in force, lowest
    # precedence first.
    toml_files: ClassVar[tuple[Path, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = reversed(getattr(settings_cls, "toml_files", ()))
        tomls = tuple(TomlConfigSettingsSource(settings_cls, toml_file=f) for f in files)
        return (init_settings, env_settings, *tomls)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> tuple[Network, ...]:
        return _parse_networks(value)

    @property
    def replica(self) -> str:
        """This process's name among replicas: `replica_id`, else `<hostname>:<port>`."""
        return self.replica_id or f"{socket.gethostname()}:{self.port}"

    @property
    def rules_path(self) -> Path:
        return (
            Path(self.rules_file) if self.rules_file else shipped_config_dir() / "alert-rules.toml"
        )


def _parse_networks(value: Any) -> tuple[Network, ...]:
    """CIDRs from a list (TOML, a flag) or a string: a JSON list or comma-separated (the
    environment). A lone address is its own /32 or /128; host bits set are an error, as
    `10.0.0.1/8` is more likely a typo than a wish to trust 10.0.0.0/8."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"not a JSON list: {e}") from None
        else:
            value = [part for part in (p.strip() for p in text.split(",")) if part]
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list of networks (CIDR), e.g. ['10.0.0.0/8']")
    networks = []
    for item in value:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        text = str(item).strip()
        try:
            networks.append(ipaddress.ip_network(text))
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a network in CIDR form (10.0.0.0/8)") from None
            raise ValueError(f"{text!r} has host bits set (the network is {loose})") from None
    return tuple(networks)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from all sources; `overrides` are command-line flags (None = not given).

    Raises ConfigError naming the file (or environment variable), the key and the problem.
    """
    files = [shipped_config_dir() / "gateway.toml"]
    if config is not None:
        files.append(config)
    keys_by_file = {f: _read_toml(f) for f in files}
    for path, data in keys_by_file.items():
        for key in data:
            if key not in Settings.model_fields:
                raise ConfigError(f"{path}: unknown key {key!r}")

    flags = {k: v for k, v in overrides.items() if v is not None}
    # pydantic-settings reads sources from class state; a throwaway subclass keeps the
    # file list per call instead of mutating a global.
    cls = type("BoundSettings", (Settings,), {"toml_files": tuple(files)})
    try:
        settings: Settings = cls(**flags)
    except ValidationError as e:
        raise ConfigError(_explain(e, flags, keys_by_file)) from e
    return settings


def _explain(e: ValidationError, flags: dict[str, Any], files: dict[Path, dict[str, Any]]) -> str:
    problems = []
    for err in e.errors():
        key = str(err["loc"][0]) if err["loc"] else "?"
        if key in flags:
            where = f"--{key.replace('_', '-')}"
        elif ENV_PREFIX + key.upper() in os.environ:
            where = f"environment {ENV_PREFIX}{key.upper()}"
        else:
            where = next((str(p) for p in reversed(files) if key in files[p]), "settings")
        problems.append(f"{where}: {key}: {err['msg']}")
    return "; ".join(problems)
