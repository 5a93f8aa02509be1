"""Bounds on a machine's user data, checked before anything decodes or launches it.

User data is written in a blueprint (`nodes.NAME.user_data`): a script (`#!`) or a
cloud-init document (`#cloud-config`). It is at most `MAX_USER_DATA` bytes as written,
EC2's limit on raw user data, so a blueprint that validates launches on every provider.
A `#cloud-config` is read with provisor's bounded YAML reader (aliases, depth and size
limited) and the files it writes (`write_files`, possibly base64 or gzip encoded) may
decode to `MAX_DECODED` bytes in all: a few KiB of gzip cannot grow into gigabytes in
the worker that turns it into a script.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping

from provisor.core.errors import ParseErrors
from provisor.core.yamlpos import Document, parse_yaml

__all__ = [
    "ENCODINGS",
    "MAX_DECODED",
    "MAX_USER_DATA",
    "TooLarge",
    "UserDataError",
    "check_cloud_config",
    "check_user_data",
    "decode_content",
]

MAX_USER_DATA = 16 * 1024
"""The most bytes of user data, as written (EC2 takes 16 KiB before base64)."""

MAX_DECODED = 1024 * 1024
"""The most bytes the files of a #cloud-config decode to, together."""

_TEXT = ("text", "text/plain")
_BASE64 = ("b64", "base64")
_GZIP = ("gz", "gzip")
_GZIP_BASE64 = ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64")
ENCODINGS = _TEXT + _BASE64 + _GZIP + _GZIP_BASE64
"""The `write_files` encodings cloud-init reads and provisor checks."""


class UserDataError(ValueError):
    """User data that is malformed or too large; the message says where in it."""


class TooLarge(UserDataError):
    """Content that decodes to more bytes than allowed."""


def _gunzip(data: bytes, limit: int) -> bytes:
    """`data` gunzipped (every member), refused as soon as it passes `limit` bytes."""
    out = bytearray()
    while data:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a gzip header and trailer
        try:
            out += stream.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise UserDataError(f"not valid gzip: {exc}") from None
        if len(out) > limit or stream.unconsumed_tail:
            raise TooLarge(f"decompresses to more than {limit:,} bytes")
        if not stream.eof:
            raise UserDataError("not valid gzip: the data ends inside the stream")
        data = stream.unused_data
    return bytes(out)


def decode_content(content: str | bytes, encoding: str, limit: int = MAX_DECODED) -> bytes:
    """A `write_files` item's content as the file gets it, at most `limit` bytes.

    Gzip content is binary: YAML gives it as bytes (`!!binary`), or as the base64 text
    of those bytes when read without tags (as provisor's YAML reader reads)."""
    raw = content.encode() if isinstance(content, str) else content
    kind = encoding.lower()
    if kind not in ENCODINGS:
        raise UserDataError(
            f"encoding {encoding!r} is not supported: use one of {', '.join(ENCODINGS)}"
        )
    base64_text = kind in _BASE64 + _GZIP_BASE64 or (kind in _GZIP and isinstance(content, str))
    try:
        if base64_text:
            raw = base64.b64decode(raw, validate=False)
    except binascii.Error as exc:
        raise UserDataError(f"not valid base64: {exc}") from None
    if kind in _GZIP + _GZIP_BASE64:
        raw = _gunzip(raw, limit)
    if len(raw) > limit:
        raise TooLarge(f"more than {limit:,} bytes")
    return raw


def check_user_data(text: str) -> None:
    """Refuse user data that is too large, or a #cloud-config that does not read or
    whose files decode to too much; `UserDataError` says what and where."""
    size = len(text.encode())
    if size > MAX_USER_DATA:
        raise UserDataError(
            f"user data is {size:,} bytes, more than the {MAX_USER_DATA:,} (16 KiB) a "
            "machine can be given: fetch large files from the scripts instead"
        )
    if text.split("\n", 1)[0].strip() == "#cloud-config":
        check_cloud_config(text)


def check_cloud_config(text: str) -> None:
    """Refuse a #cloud-config that does not read with the bounded YAML reader, is not
    a mapping, or whose `write_files` are malformed or decode to too much."""
    try:
        document = parse_yaml(text, "#cloud-config")
    except ParseErrors as exc:
        first = exc.errors[0]
        raise UserDataError(
            f"#cloud-config line {first.line}, column {first.column}: {first.message}"
        ) from None
    config = document.data
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise UserDataError("#cloud-config must be a mapping (key: value lines)")
    files = config.get("write_files")
    if files is None:
        return
    if not isinstance(files, list):
        raise UserDataError(_at(document, ("write_files",), "write_files must be a list"))
    left = MAX_DECODED
    for index, item in enumerate(files):
        where = ("write_files", index)
        if not isinstance(item, Mapping):
            raise UserDataError(_at(document, where, f"write_files[{index}] must be a mapping"))
        content = item.get("content", "")
        if not isinstance(content, str):
            raise UserDataError(_at(document, where, f"write_files[{index}].content must be text"))
        encoding = str(item.get("encoding", "text"))
        if encoding.lower() not in ENCODINGS:
            raise UserDataError(
                _at(
                    document,
                    (*where, "encoding"),
                    f"write_files[{index}].encoding {encoding!r} is not supported: use one "
                    f"of {', '.join(ENCODINGS)}",
                )
            )
        try:
            left -= len(decode_content(content, encoding, left))
        except UserDataError as exc:
            problem = str(exc)
            if isinstance(exc, TooLarge):
                problem = f"the files decode to more than {MAX_DECODED:,} bytes in all"
            raise UserDataError(
                _at(document, (*where, "content"), f"write_files[{index}].content: {problem}")
            ) from None


def _at(document: Document, path: tuple[str | int, ...], message: str) -> str:
    mark = document.mark(path)
    return f"#cloud-config line {mark.line}, column {mark.column}: {message}"
