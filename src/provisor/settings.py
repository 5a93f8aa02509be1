"""Configuration: environment (`PROVISOR_*`), then `provisor.toml`, then defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from provisor.core.sizes import parse_size
from provisor.core.timespec import parse_seconds
from provisor.datadir import config_file, default_home

LogLevel = Literal["debug", "info", "warning", "error"]
MAX_SECONDS = 30 * 24 * 3600.0  # every wait has a bound: a month is the longest


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVISOR_", extra="forbid")

    home: Path = Field(default_factory=default_home, description="data directory")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in `home`"
    )
    log_level: LogLevel = "warning"
    tenant: str = Field(default="default", description="tenant used when none is given")
    local_network: str = Field(
        default="127.100.0.0/16", description="loopback block the local provider's machines use"
    )
    parameter_address: str = Field(
        default="127.0.0.1",
        description="address the worker's runtime-parameter endpoint listens on; machines "
        "must reach it (on a cloud: an address of the controller in their network)",
    )

    sign_in_failures: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="refused tokens a client may present in a minute before it gets 429",
    )
    allowed_hosts: str = Field(
        default="",
        description="comma-separated names the server answers to besides localhost and "
        "the address it listens on (the Host header; anything else is refused)",
    )

    # Fleet jobs: limits that keep one job from holding memory or a host forever.
    command_timeout: float = Field(
        default=3600.0,
        gt=0,
        le=MAX_SECONDS,
        description="seconds a job's command may run on a host before it is killed "
        "(`provisor run -t` overrides it); 30, 90s, 15m, 2h",
    )
    stall_timeout: float = Field(
        default=60.0,
        gt=0,
        le=MAX_SECONDS,
        description="seconds a copy or fetch may move no data before it is stopped",
    )
    max_output: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="bytes of each host's stdout and of its stderr a job keeps (the rest "
        "is counted; -o/-e files and the job's directory get all of it); 512K, 1M, 8M",
    )
    job_stale_after: float = Field(
        default=60.0,
        ge=1,
        le=MAX_SECONDS,
        description="a running job whose process has not shown a sign of life for this "
        "long is marked interrupted",
    )
    worker_restart_pause: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="seconds before the background worker is started again after it died; "
        "doubled each time it dies again soon after",
    )
    job_live_seconds: float = Field(
        default=600.0,
        ge=0,
        le=MAX_SECONDS,
        description="seconds the server keeps a finished job's results in memory for "
        "followers; after that they are read from the database",
    )

    # Alerts: how often the dispatcher looks for new events, and how soon a failed
    # notification is tried again (doubling each time, up to 30 minutes).
    alert_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="seconds between two passes of the alert dispatcher (server, worker)",
    )
    alert_retry_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="seconds before a failed notification is tried again (then doubled)",
    )
    lease_notice: float = Field(
        default=86400.0,
        ge=0,
        le=MAX_SECONDS,
        description="how long before a lease ends the event lease.expiring is recorded "
        "(the notice alerts send); 0 for none; 30m, 2h, 1d",
    )

    @field_validator(
        "command_timeout",
        "stall_timeout",
        "job_stale_after",
        "job_live_seconds",
        "worker_restart_pause",
        "alert_poll_seconds",
        "alert_retry_seconds",
        "lease_notice",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        return parse_seconds(value) if isinstance(value, str) else value

    @field_validator("max_output", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("parameter_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        import ipaddress

        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"invalid address {value!r}: an IP address of this computer") from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def allowed_host_names(self) -> list[str]:
        return [name.strip() for name in self.allowed_hosts.split(",") if name.strip()]

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'provisor.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
