"""Reading and showing byte sizes as operators write them: `512K`, `1M`, `2G`, `4096`."""

from __future__ import annotations

import re

_SIZE = re.compile(r"([0-9]{1,15})\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str | int) -> int:
    """`1M` is 1,048,576 bytes: a whole number, then K, M or G (powers of 1024; `KiB`,
    `MB` and friends read the same), or none for bytes. Raises ValueError otherwise."""
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        shown = repr(text if len(text) <= 40 else text[:37] + "...")
        raise ValueError(f"invalid size {shown}: a number of bytes, or e.g. 512K, 1M, 2G")
    return int(match.group(1)) * _FACTORS[match.group(2).upper()]


def format_size(size: int) -> str:
    """`1048576` as `1 MiB`, `1536` as `1.5 KiB`: for messages."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size:,} bytes" if unit == "bytes" else f"{value:.4g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["format_size", "parse_size"]
