"""A backup store in an S3-compatible bucket (AWS, MinIO, Ceph RGW, ...), through boto3.

Objects are streamed: one PUT for a small one, a multipart upload in parts of PART
bytes for a big one (aborted if anything fails, so no half object is left behind).
The secret access key is given by the caller (unsealed just before), never stored here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from provisor.backups.store import CHUNK, Hashing, StoreError, Written, check_key, rechunk
from provisor.core.errors import InvalidInput, invalid_input

PART = 8 * 1024 * 1024  # S3 wants parts of at least 5 MiB (the last one aside)
UPLOADS = 4  # parts sent at once (each held in memory until it is sent)
_BUCKET_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


class S3Settings(BaseModel):
    """What `provisor backup stores add NAME --type s3` records (no secret in here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(description="the bucket; it must exist")
    endpoint: str | None = Field(default=None, description="the S3 URL; none for AWS's own")
    region: str = Field(default="us-east-1", max_length=64)
    prefix: str = Field(default="", max_length=256, description="keys start with this")
    access_key_id: str | None = Field(
        default=None, max_length=256, description="with the secret stored sealed; none: boto3's"
    )
    call_timeout: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not 3 <= len(value) <= 63 or not set(value) <= _BUCKET_CHARS:
            raise ValueError(
                f"invalid bucket {value[:70]!r}: 3 to 63 lower-case letters, digits, '.', '-'"
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 2048:
            raise ValueError(f"invalid endpoint {value[:80]!r}: an http(s) URL")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if value:
            check_key("(new)", value)
        return value

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> S3Settings:
        try:
            return cls.model_validate(dict(settings))
        except ValidationError as exc:
            raise invalid_input(exc) from None
        except StoreError as exc:
            raise InvalidInput(exc.message, field="prefix") from None


class S3Store:
    kind = "s3"

    def __init__(self, name: str, settings: S3Settings, secret_access_key: str | None) -> None:
        import boto3
        from botocore.config import Config

        self.name = name
        self.settings = settings
        credentials: dict[str, str] = {}
        if settings.access_key_id:
            if not secret_access_key:
                raise StoreError(name, "it has an access key id but no secret access key")
            credentials = {
                "aws_access_key_id": settings.access_key_id,
                "aws_secret_access_key": secret_access_key,
            }
        config = Config(
            region_name=settings.region,
            retries={"mode": "standard", "total_max_attempts": 4},
            connect_timeout=min(settings.call_timeout, 10.0),
            read_timeout=settings.call_timeout,
            user_agent_extra="provisor",
            s3={"addressing_style": "path"},
        )
        session = boto3.session.Session(**credentials)
        self.client: Any = session.client("s3", endpoint_url=settings.endpoint, config=config)

    def __repr__(self) -> str:
        return f"S3Store({self.name!r}, bucket={self.settings.bucket!r})"

    def _key(self, key: str) -> str:
        check_key(self.name, key)
        return f"{self.settings.prefix}/{key}" if self.settings.prefix else key

    def _fail(self, exc: Exception, key: str | None = None) -> StoreError:
        return StoreError(self.name, f"{type(exc).__name__}: {exc}", key=key)

    def put(self, key: str, chunks: Iterable[bytes]) -> Written:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        bucket = self.settings.bucket
        hashing = Hashing()
        parts = rechunk(hashing.through(chunks), PART)
        first = next(parts, b"")
        second = next(parts, None)
        try:
            if second is None:
                self.client.put_object(Bucket=bucket, Key=full, Body=first)
                return Written(hashing.size, hashing.sha256)
            upload = self.client.create_multipart_upload(Bucket=bucket, Key=full)["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None
        try:
            done = self._upload_parts(full, upload, itertools.chain([first, second], parts))
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=full, UploadId=upload, MultipartUpload={"Parts": done}
            )
        except BaseException as exc:
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload)
            if isinstance(exc, BotoCoreError | ClientError):
                raise self._fail(exc, key) from None
            raise
        return Written(hashing.size, hashing.sha256)

    def _upload_parts(self, full: str, upload: str, parts: Iterator[bytes]) -> list[dict[str, Any]]:
        """Upload the parts, UPLOADS at a time (so at most that many parts are held)."""

        def send(number: int, body: bytes) -> dict[str, Any]:
            answer = self.client.upload_part(
                Bucket=self.settings.bucket, Key=full, UploadId=upload, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}

        done: list[dict[str, Any]] = []
        with concurrent.futures.ThreadPoolExecutor(UPLOADS, thread_name_prefix="s3-part") as pool:
            flying: collections.deque[concurrent.futures.Future[dict[str, Any]]] = (
                collections.deque()
            )
            try:
                for number, body in enumerate(parts, start=1):
                    if len(flying) >= UPLOADS:
                        done.append(flying.popleft().result())
                    flying.append(pool.submit(send, number, body))
                while flying:
                    done.append(flying.popleft().result())
            finally:
                for future in flying:
                    future.cancel()
        return done

    def get(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.settings.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise StoreError(self.name, "missing", key=key) from None
            raise self._fail(exc, key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, key) from None
        return self._read(body, key)

    def _read(self, body: Any, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None
        finally:
            body.close()

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.settings.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None

    def check(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.settings.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc) from None
        where = self.settings.endpoint or f"AWS {self.settings.region}"
        return f"bucket {self.settings.bucket} at {where}"

    def close(self) -> None:
        self.client.close()
