"""Which provider kinds exist, how their settings are checked and how one is built.

A configured provider is a name, a kind, settings (plain JSON) and at most one
secret (kept sealed by the caller). `local` is built in and needs no configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisor.core.errors import InvalidInput
from provisor.providers.base import Provider

KINDS = ("ec2",)  # kinds an operator adds with `provisor providers add`
BUILT_IN = "local"


def check_settings(kind: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings, validated and with defaults filled in; InvalidInput names the field."""
    if kind == "ec2":
        from provisor.providers.ec2 import Ec2Settings

        return Ec2Settings.parse(settings).as_json()
    raise InvalidInput(f"unknown provider type {kind!r}: use {', '.join(KINDS)}", field="type")


def build(
    kind: str,
    name: str,
    settings: Mapping[str, Any],
    secret: str | None,
    *,
    home: Path,
    local_network: str,
    controller: str = "",
    controller_address: str | None = None,
    parameter_url: str = "",
) -> Provider:
    """A provider object for a configured (or the built-in local) provider.

    `controller` names this controller in what a cloud provider tags (see ec2);
    `controller_address` is its address as the machines know it; `parameter_url` its
    runtime-parameter endpoint, which local machines reach through a relay.
    """
    if kind == BUILT_IN:
        from provisor.providers.local import LocalProvider

        return LocalProvider(
            home / "local-provider", network=local_network, parameter_url=parameter_url
        )
    if kind == "ec2":
        from provisor.providers.ec2 import Ec2Provider, Ec2Settings

        return Ec2Provider(
            name,
            Ec2Settings.parse(settings),
            secret_access_key=secret,
            controller=controller,
            controller_address=controller_address,
        )
    raise InvalidInput(f"unknown provider type {kind!r}: use {', '.join(KINDS)}", field="type")
