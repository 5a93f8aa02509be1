"""Envelope encryption of stored objects: a random data key per backup (AES-256-GCM),
the key itself sealed with provisor's sealing key (by the caller, see
orchestrator/secrets.py).

An object is a header (magic, a random nonce prefix) then frames: a 4-byte length and
one sealed chunk of at most CHUNK bytes. Each chunk's nonce is the prefix and its
number; its associated data says its number and whether it is the last, so frames
cannot be dropped, reordered, or the object cut short without decryption failing.
Both directions stream: nothing bigger than a chunk is held.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from provisor.backups.store import CHUNK, rechunk
from provisor.core.errors import ProvisorError

MAGIC = b"PVBK1\n"
_PREFIX = 8  # bytes of random nonce prefix; 4 more count the chunks
_TAG = 16
_MAX_CHUNKS = 2**32 - 1


class DecryptError(ProvisorError):
    """A stored object does not decrypt: altered, cut short, or another key's."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _aad(number: int, last: bool) -> bytes:
    return MAGIC + struct.pack(">I?", number, last)


def encrypt(key: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The object for the plain `chunks`: the header, then one frame per chunk."""
    cipher = AESGCM(key)
    prefix = os.urandom(_PREFIX)
    yield MAGIC + prefix
    pieces = rechunk(chunks, CHUNK)
    current = next(pieces, b"")
    number = 0
    while True:
        following = next(pieces, None)
        last = following is None
        if number >= _MAX_CHUNKS:
            raise ProvisorError("an object of more than 4 PiB cannot be stored")
        nonce = prefix + struct.pack(">I", number)
        sealed = cipher.encrypt(nonce, current, _aad(number, last))
        yield struct.pack(">I", len(sealed)) + sealed
        if following is None:
            return
        current, number = following, number + 1


def decrypt(key: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The plain data of a stored object; DecryptError if it was altered in any way."""
    cipher = AESGCM(key)
    buffer = bytearray()
    source = iter(chunks)

    def need(count: int) -> bytes:
        while len(buffer) < count:
            chunk = next(source, None)
            if chunk is None:
                raise DecryptError("the stored object is cut short")
            buffer.extend(chunk)
        taken = bytes(buffer[:count])
        del buffer[:count]
        return taken

    header = need(len(MAGIC) + _PREFIX)
    if not header.startswith(MAGIC):
        raise DecryptError("not a provisor backup object (its header is wrong)")
    prefix = header[len(MAGIC) :]
    number = 0
    while True:
        (length,) = struct.unpack(">I", need(4))
        if not _TAG <= length <= CHUNK + _TAG:
            raise DecryptError(f"chunk {number} has an impossible length ({length})")
        sealed = need(length)
        nonce = prefix + struct.pack(">I", number)
        for last in (False, True):
            try:
                plain = cipher.decrypt(nonce, sealed, _aad(number, last))
                break
            except InvalidTag:
                continue
        else:
            raise DecryptError(f"chunk {number} does not decrypt: altered, or another key's")
        yield plain
        if last:
            if buffer or next(source, None):
                raise DecryptError("the stored object has data after its last chunk")
            return
        number += 1
