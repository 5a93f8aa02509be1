"""provisor's settings (the environment, then provisor.toml, then the defaults), for the
faces that need them without the store: `services.context` brings SQLAlchemy along,
which `provisor run --server` does not need.

`data_home` is the data directory without even the settings (pydantic) when nothing but
the environment can set it: the warm path of `provisor run --server` reads only the
token `provisor login` kept there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from provisor.datadir import config_file, default_home

if TYPE_CHECKING:
    from provisor.settings import Settings

__all__ = ["data_home", "get_settings"]


def get_settings() -> Settings:
    from provisor.settings import get_settings as load

    return load()


def data_home() -> Path:
    """`get_settings().home`, read from the environment alone when there is no
    provisor.toml (which may set it)."""
    if config_file().exists():
        return get_settings().home
    return default_home()
