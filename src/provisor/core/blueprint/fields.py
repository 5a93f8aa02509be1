"""Field checks of a blueprint (each raises ValueError, which pydantic reports at the
field), the patterns they and the schema match against, the limits `AUTOMATIC_KEYS`
and `MAX_COUNT`, and the conversion of a plain value (text to a whole number or
true/false), which a parameter's default needs before any model exists; the bottom
layer of the package, importing nothing from it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from provisor.core.errors import InvalidInput
from provisor.core.names import check_name
from provisor.core.userdata import check_user_data

AUTOMATIC_KEYS = ("address", "hostname")
"""Runtime parameters provisor publishes for every machine at launch: they never change
afterwards, and machines cannot set them."""

HOST_KEYS = "host_keys"
"""The runtime parameter a machine reports its SSH host public keys in at first boot
(providers that cannot tell them: EC2), once; scripts cannot set it."""

MAX_COUNT = 1000
"""The most machines one node may have."""

MAX_MACHINES = 2000
"""The most machines one deployment may have, all nodes together."""

MAX_NODES = 100
"""The most nodes a blueprint may have."""

MAX_PARAMETERS = 200
"""The most parameters a blueprint may have."""


_NODE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
_PARAM = re.compile(r"[a-z][a-z0-9_]{0,62}")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_PATTERN = re.compile(r"[A-Za-z0-9#-]{1,63}")
_DEVICE = re.compile(r"/dev/[a-z][a-z0-9]{1,15}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LEASE_UNITS = "mhdw"
# Narrower than parse_duration reads: 1 to 6 digits, no leading zero, no space.
_LEASE = re.compile(r"[1-9][0-9]{0,5}[" + _LEASE_UNITS + "]")
_CURRENCY = re.compile(r"[A-Z]{3}")
_WAIT = re.compile(r"([a-z][a-z0-9-]*)(?:\.([0-9]+))?\.([a-z][a-z0-9_]*)")
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_MAX_VALUE = 65_536  # characters of one parameter value


def _name(value: str) -> str:
    return check_name(value, field="name")


def _version(value: str) -> str:
    if not _VERSION.fullmatch(value):
        raise ValueError(
            f"invalid version {value!r}: use letters, digits, '.', '-', '+', '_' "
            "(at most 64), e.g. 1.0 or 2.1.0-rc1"
        )
    return value


def _lease(value: str | None) -> str | None:
    if value is None or value.strip().lower() == "none":
        return None
    if not _LEASE.fullmatch(value.strip()):
        raise ValueError(f"invalid lease {value!r}: use a duration like 90m, 12h, 30d, 2w, or none")
    return value.strip()


def _currency(value: str) -> str:
    if not _CURRENCY.fullmatch(value):
        raise ValueError(f"invalid currency {value!r}: use a 3-letter code like EUR or USD")
    return value


def _key(value: str) -> str:
    if not _KEY.fullmatch(value):
        raise ValueError(
            f"invalid runtime parameter name {value!r}: start with a lower-case letter, "
            "then lower-case letters, digits and '_'"
        )
    if value in AUTOMATIC_KEYS:
        raise ValueError(f"{value!r} is published automatically by every machine; do not list it")
    if value == HOST_KEYS:
        raise ValueError(f"{value!r} is reported by each machine at first boot; do not list it")
    return value


def _node_ref(value: str) -> str:
    if not _NODE.fullmatch(value):
        raise ValueError(
            f"invalid node name {value!r}: a DNS label (lower-case letters, digits and '-', "
            "starting with a letter, at most 32 characters)"
        )
    return value


def _wait_ref(value: str) -> str:
    match = _WAIT.fullmatch(value)
    if match is None:
        raise ValueError(
            f"invalid runtime parameter reference {value!r}: use NODE.KEY (every machine "
            "of the node) or NODE.INDEX.KEY (one machine), e.g. db.ready or db.1.address"
        )
    index = match.group(2)
    if index is not None and int(index) < 1:
        raise ValueError(f"invalid machine index in {value!r}: machines are numbered from 1")
    return value


def _hostname_pattern(value: str | None) -> str | None:
    if value is None:
        return None
    if not _PATTERN.fullmatch(value) or not _DNS_LABEL.fullmatch(value.replace("#", "a")):
        raise ValueError(
            f"invalid hostname pattern {value!r}: letters, digits and '-' (not first or last), "
            "with '#' where the deployment's hostname completion goes, e.g. sap#-db"
        )
    return value


def _mount(value: str) -> str:
    if not value.startswith("/") or value == "/" or "\0" in value or "\n" in value:
        raise ValueError(f"invalid mount point {value!r}: an absolute path other than /")
    return value


def _provider(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_name(value, field="provider")
    except InvalidInput as exc:
        raise ValueError(exc.message) from None  # the position names the field


def _network_name(value: str) -> str:
    return check_name(value, field="name")


def _user_data(value: str | None) -> str | None:
    if value is not None and not value.startswith(("#cloud-config", "#!")):
        raise ValueError(
            "user data must be a cloud-init file (first line #cloud-config) "
            "or a script (first line #!/bin/sh or another interpreter)"
        )
    if value is not None:
        check_user_data(value)  # its size, and what a #cloud-config decodes to
    return value


def _script(value: str) -> str:
    if not value.strip():
        raise ValueError("a script cannot be empty")
    return value


def _device(value: str | None) -> str | None:
    if value is not None and not _DEVICE.fullmatch(value):
        raise ValueError(f"invalid device {value!r}: e.g. /dev/sdf or /dev/xvdf")
    return value


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"invalid CIDR {value!r}: e.g. 10.0.0.0/8 or 0.0.0.0/0") from None


def _ports(value: Any) -> Any:
    """`22`, `"22"` or `"8000-8100"` as (first, last)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        first, _, last = value.strip().partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            low, high = int(first), int(last or first)
            if 1 <= low <= high <= 65535:
                return (low, high)
        raise ValueError(f"invalid ports {value!r}: a port (22) or a range (8000-8100)")
    return value


def _image(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"invalid image {value!r}: a name or id without spaces")
    return value


def _count(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_COUNT:
            raise ValueError(f"count must be between 0 and {MAX_COUNT}")
        return value
    if isinstance(value, str) and _PARAM.fullmatch(value.strip()):
        return value.strip()
    raise ValueError(
        "count must be a whole number or the name of an int parameter, e.g. count: workers"
    )


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    raise ValueError("must be one value: text, a whole number, or true/false")


def _as_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# A plain value as an int, a bool or text: Parameter's default and the inputs both
# convert with it, so it sits below both.


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert_plain(kind: str, raw: Any) -> Any:
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and _INTEGER.fullmatch(raw):
            return int(raw)
        raise ValueError(f"expected a whole number, got {_shown(raw)}")
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError(f"expected true or false (or yes/no), got {_shown(raw)}")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if not isinstance(raw, str):
        raise ValueError(f"expected text, got {_shown(raw)}")
    if len(raw) > _MAX_VALUE:
        raise ValueError(f"longer than {_MAX_VALUE:,} characters")
    return raw
