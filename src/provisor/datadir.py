"""Where provisor keeps its data, found without loading the settings (and pydantic)."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """`PROVISOR_HOME`, else the platform's data directory (`~/.local/share/provisor`)."""
    explicit = os.environ.get("PROVISOR_HOME")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_data_dir("provisor"))


def config_file() -> Path:
    """`PROVISOR_CONFIG` if set, else `provisor.toml` in the data directory."""
    explicit = os.environ.get("PROVISOR_CONFIG")
    return Path(explicit) if explicit else default_home() / "provisor.toml"
