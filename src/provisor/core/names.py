"""What a well-formed name, address, port and tag look like."""

from __future__ import annotations

import ipaddress
import re

from provisor.core.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_])?$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def check_name(value: str, *, field: str = "name") -> str:
    """A host, group or tenant name: letters, digits, `.`, `_`, `-`; at most 128.

    Names never contain `:`, `,`, `&`, `!`, `@` or brackets, so they cannot be
    confused with the operators of a target expression.
    """
    if not _NAME.match(value):
        raise InvalidInput(
            f"invalid name {value!r}: use letters, digits, '.', '_' or '-' "
            "(at most 128, starting and ending with a letter or digit)",
            field=field,
        )
    return value


def check_deployment_name(value: str, *, field: str = "name") -> str:
    """A new deployment's name: a DNS label (lower-case letters, digits and `-`, at most
    63, not starting or ending with `-`).

    It goes into machine names, hostnames, tokens and runtime-parameter keys, where
    a `.` or an upper-case letter would be read differently. Deployments made before
    this rule keep their names: only new ones are checked.
    """
    if not _LABEL.fullmatch(value):
        raise InvalidInput(
            f"invalid deployment name {value[:80]!r}: a deployment name is a DNS label: "
            "lower-case letters, digits and '-' (not first or last), at most 63 characters",
            field=field,
        )
    return value


def check_address(value: str, *, field: str = "address") -> str:
    """An IPv4/IPv6 address or a DNS name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if 0 < len(value) <= 253 and all(_DNS_LABEL.match(label) for label in labels):
        return value
    raise InvalidInput(f"invalid address {value!r}: not an IP address or DNS name", field=field)


def check_port(value: int, *, field: str = "port") -> int:
    if not 1 <= value <= 65535:
        raise InvalidInput(f"invalid port {value}: must be 1-65535", field=field)
    return value


def check_tag_key(value: str, *, field: str = "tags") -> str:
    if not _TAG_KEY.match(value):
        raise InvalidInput(
            f"invalid tag or fact key {value!r}: start with a letter or '_', "
            "then letters, digits, '_', '.', '-'",
            field=field,
        )
    return value


def parse_key_values(items: list[str], *, field: str) -> dict[str, str]:
    """`["env=prod", "role=web"]` -> `{"env": "prod", "role": "web"}`."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"expected KEY=VALUE, got {item!r}", field=field)
        result[check_tag_key(key.strip(), field=field)] = value.strip()
    return result


def deployment_group(deployment: str) -> str:
    """The inventory group that holds a deployment's machines (`deployment:NAME` targets it)."""
    return f"deployment-{deployment}"
