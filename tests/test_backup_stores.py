"""Backup stores and their encryption, against real backends: a directory, and S3 on a
real moto_server on loopback."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from provisor.backups import crypto
from provisor.backups.local_store import DirectoryStore
from provisor.backups.s3_store import PART, S3Settings, S3Store
from provisor.backups.store import CHUNK, StoreError, read_back
from provisor.core.errors import InvalidInput
from provisor.testing.moto import MotoServer

BUCKET = "provisor-backups"


def _data(size: int) -> Iterator[bytes]:
    block = os.urandom(64 * 1024)
    left = size
    while left > 0:
        yield block[: min(left, len(block))]
        left -= len(block)


def test_encryption_round_trip_streams_and_detects_any_change() -> None:
    key = crypto.new_data_key()
    plain = b"".join(_data(3 * CHUNK + 123))
    sealed = b"".join(
        crypto.encrypt(key, [plain[i : i + 7777] for i in range(0, len(plain), 7777)])
    )
    assert plain not in sealed and len(sealed) < len(plain) + 200
    assert (
        b"".join(crypto.decrypt(key, [sealed[i : i + 999] for i in range(0, len(sealed), 999)]))
        == plain
    )
    for where in (3, len(crypto.MAGIC) + 10, len(sealed) // 2, len(sealed) - 1):
        flipped = bytearray(sealed)
        flipped[where] ^= 0x01
        with pytest.raises(crypto.DecryptError):
            b"".join(crypto.decrypt(key, [bytes(flipped)]))
    frame = len(crypto.MAGIC) + 8 + 4 + CHUNK + 16
    with pytest.raises(crypto.DecryptError, match="cut short"):  # the last frame dropped
        b"".join(crypto.decrypt(key, [sealed[: frame * 3]]))
    with pytest.raises(crypto.DecryptError):  # another backup's key
        b"".join(crypto.decrypt(crypto.new_data_key(), [sealed]))
    empty = b"".join(crypto.encrypt(key, []))
    assert b"".join(crypto.decrypt(key, [empty])) == b""


def test_directory_store_is_private_and_whole(tmp_path: Path) -> None:
    store = DirectoryStore("local", tmp_path / "store")
    written = store.put("inst/web.1/abc/disk.tar.gz", _data(2 * CHUNK + 5))
    assert written.size == 2 * CHUNK + 5
    assert read_back(store, "inst/web.1/abc/disk.tar.gz") == written
    for path in [tmp_path / "store", *(tmp_path / "store").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path

    def failing() -> Iterator[bytes]:
        yield b"x" * 10
        raise StoreError("local", "the source failed")

    with pytest.raises(StoreError):
        store.put("inst/web.1/abc/other", failing())
    assert not (tmp_path / "store" / "inst/web.1/abc/other").exists()
    assert [p.name for p in (tmp_path / "store/inst/web.1/abc").iterdir()] == ["disk.tar.gz"]
    for bad in ("../escape", "/abs", "a/../../b", "a//b", ""):
        with pytest.raises(StoreError, match="invalid object key"):
            store.put(bad, [b"x"])
    with pytest.raises(StoreError, match="missing"):
        store.get("inst/web.1/nothing")
    store.delete("inst/web.1/abc/disk.tar.gz")
    assert not (tmp_path / "store" / "inst").exists()


@pytest.fixture
def s3(moto_server: MotoServer) -> Iterator[S3Store]:
    moto_server.reset()
    client = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    settings = S3Settings.parse(
        {"bucket": BUCKET, "endpoint": moto_server.url, "access_key_id": "testing", "prefix": "p"}
    )
    store = S3Store("offsite", settings, "testing")
    yield store
    store.close()


def test_s3_store_streams_small_and_multipart_objects(s3: S3Store) -> None:
    assert BUCKET in s3.check()
    small = s3.put("i/m/b/small", _data(1000))
    assert read_back(s3, "i/m/b/small") == small
    big = s3.put("i/m/b/big", _data(2 * PART + 17))  # three parts
    assert big.size == 2 * PART + 17
    assert read_back(s3, "i/m/b/big") == big
    key = s3.client.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sorted(k["Key"] for k in key) == ["p/i/m/b/big", "p/i/m/b/small"]
    s3.delete("i/m/b/big")
    with pytest.raises(StoreError, match="missing"):
        list(s3.get("i/m/b/big"))

    def failing() -> Iterator[bytes]:
        yield from _data(PART + 1)
        raise StoreError("offsite", "the source failed")

    with pytest.raises(StoreError, match="source failed"):
        s3.put("i/m/b/half", failing())
    assert s3.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_s3_settings_are_checked() -> None:
    for bad, field in (
        ({"bucket": "No_Such"}, "bucket"),
        ({"bucket": "ok-bucket", "endpoint": "file:///etc"}, "endpoint"),
        ({"bucket": "ok-bucket", "prefix": "../x"}, "prefix"),
        ({"bucket": "ok-bucket", "surprise": 1}, "surprise"),
        ({"bucket": "x" * 10_000}, "bucket"),
    ):
        with pytest.raises(InvalidInput) as caught:
            S3Settings.parse(bad)
        assert field in str(caught.value), caught.value
