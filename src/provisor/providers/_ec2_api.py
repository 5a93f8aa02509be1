"""Low-level access to the EC2 API for the `ec2` provider: calls, errors, waits.

boto3 does the protocol; its calls block, so they run in a thread pool of the
provider's own (the default executor's handful of threads would serialise a
30-machine launch). botocore's standard retry mode retries throttling and 5xx
with jittered backoff; provisor's own waits poll briefly with jitter instead of
boto3's waiters (15 s x 40).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from provisor.polling import poll_until
from provisor.providers._ec2_settings import Ec2Settings
from provisor.providers.base import ProviderError

T = TypeVar("T")

# Errors that mean "not there (yet)": EC2 is eventually consistent after a create.
NOT_FOUND = (
    "InvalidInstanceID.NotFound",
    "InvalidVolume.NotFound",
    "InvalidAllocationID.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidSnapshot.NotFound",
)


@dataclass
class _Wait:
    state: str
    machine: str
    deadline: float
    timeout: float
    future: asyncio.Future[dict[str, Any]]


class Ec2Error(ProviderError):
    """An EC2 API call failed: which machine, which call, the EC2 error code."""

    def __init__(self, message: str, *, code: str, machine: str | None, call: str) -> None:
        super().__init__(f"{code}: {message}", machine=machine, call=call)
        self.code = code


def client_token(token: str) -> str:
    """EC2 client tokens are at most 64 ASCII characters."""
    return (
        token
        if len(token) <= 64 and token.isascii()
        else hashlib.sha256(token.encode()).hexdigest()
    )


def tags_from(pairs: Sequence[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in pairs or ()}


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def value_filters(values: Mapping[str, str | Sequence[str]]) -> list[dict[str, Any]]:
    return [
        {"Name": name, "Values": [v] if isinstance(v, str) else list(v)}
        for name, v in values.items()
    ]


def tag_filters(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]


def _snake(call: str) -> str:
    """RunInstances -> run_instances (boto3's method names)."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(call))


class Ec2Api:
    """One EC2 endpoint: the boto3 client, its threads, and the one instance-state poller."""

    def __init__(
        self,
        name: str,
        settings: Ec2Settings,
        *,
        secret_access_key: str | None = None,
        controller: str = "",
    ) -> None:
        import boto3
        from botocore.config import Config

        self.settings = settings
        self.controller = controller
        credentials: dict[str, str] = {}
        if settings.access_key_id:
            if not secret_access_key:
                raise ProviderError(
                    f"provider {name} has an access key id but no secret access key",
                    call="configure",
                )
            credentials = {
                "aws_access_key_id": settings.access_key_id,
                "aws_secret_access_key": secret_access_key,
            }
        config = Config(
            region_name=settings.region,
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            connect_timeout=min(settings.call_timeout, 10.0),
            read_timeout=settings.call_timeout,
            max_pool_connections=32,
            user_agent_extra="provisor",
        )
        session = boto3.session.Session(**credentials)
        self.client = session.client("ec2", endpoint_url=settings.endpoint, config=config)
        self._threads = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix=f"ec2-{name}")
        self._waits: dict[str, list[_Wait]] = {}  # instance id -> who waits for which state
        self._poll_soon = False  # a new wait: poll again quickly
        self._poller: asyncio.Task[None] | None = None

    def close(self) -> None:
        self._threads.shutdown(wait=False)

    # --- calls ----------------------------------------------------------------------------

    async def call(self, call: str, machine: str | None = None, **params: Any) -> dict[str, Any]:
        """One API call off the event loop; every failure becomes an Ec2Error."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )
        from botocore.parsers import ResponseParserError

        method = getattr(self.client, _snake(call))
        loop = asyncio.get_running_loop()
        try:
            reply: dict[str, Any] = await loop.run_in_executor(
                self._threads, lambda: method(**params)
            )
            return reply
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "Unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code.isdigit():  # no EC2 error document: botocore made one from the status
                raise Ec2Error(
                    f"the endpoint answered HTTP {status or code} with a response that is not "
                    f"EC2 XML ({self.settings.endpoint or 'AWS'})",
                    code=f"HTTP{status or code}",
                    machine=machine,
                    call=call,
                ) from None
            raise Ec2Error(
                str(error.get("Message") or "no message"), code=code, machine=machine, call=call
            ) from None
        except ResponseParserError as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise Ec2Error(
                f"the endpoint's answer is not valid EC2 XML: {first}",
                code="InvalidResponse",
                machine=machine,
                call=call,
            ) from None
        except NoCredentialsError:
            raise Ec2Error(
                "no credentials: give the provider an access key or set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY",
                code="NoCredentials",
                machine=machine,
                call=call,
            ) from None
        except BotoConnectionError as exc:
            raise Ec2Error(
                f"cannot reach {self.settings.endpoint or 'the AWS endpoint'}: {exc}",
                code="Unreachable",
                machine=machine,
                call=call,
            ) from None
        except BotoCoreError as exc:
            raise Ec2Error(str(exc), code=type(exc).__name__, machine=machine, call=call) from None

    async def poll(
        self,
        what: str,
        check: Callable[[], Awaitable[T | None]],
        *,
        timeout: float,
        machine: str | None = None,
    ) -> T:
        """Until `check` gives a value: short jittered pauses, bounded by `timeout`."""

        async def visible() -> T | None:
            try:
                return await check()
            except Ec2Error as exc:
                if exc.code not in NOT_FOUND:
                    raise
                return None  # just created, not visible yet

        found = await poll_until(
            visible, timeout=timeout, first=0.2, factor=1.5, most=3.0, jitter=True
        )
        if found is None:
            raise ProviderError(f"{what}: not done after {timeout:g}s", machine=machine)
        return found

    # --- instances ----------------------------------------------------------------------

    def own(self, tags: Mapping[str, str]) -> dict[str, str]:
        """`tags` plus this controller's tag, which every resource provisor makes carries."""
        return {"provisor:controller": self.controller, **tags} if self.controller else dict(tags)

    async def instances(
        self, filters: list[dict[str, Any]] | None = None, ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if filters:
            params["Filters"] = filters
        if ids:
            params["InstanceIds"] = list(ids)
        found: list[dict[str, Any]] = []
        while True:
            reply = await self.call("DescribeInstances", **params)
            for reservation in reply.get("Reservations", []):
                found.extend(reservation.get("Instances", []))
            token = reply.get("NextToken")
            if not token:
                return found
            params["NextToken"] = token

    async def wait_state(
        self, instance_id: str, state: str, machine: str, *, timeout: float
    ) -> dict[str, Any]:
        """The instance once it is in `state`; one poller describes every waited instance."""
        loop = asyncio.get_running_loop()
        wait = _Wait(state, machine, loop.time() + timeout, timeout, loop.create_future())
        self._waits.setdefault(instance_id, []).append(wait)
        self._poll_soon = True
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._watch_instances())
        return await wait.future

    async def _watch_instances(self) -> None:
        """While anyone waits: describe all waited instances in one call, settle waits.

        By an instance-id filter rather than InstanceIds, so an instance not visible yet
        (eventual consistency) is simply missing instead of failing the whole call.
        """
        loop = asyncio.get_running_loop()
        pause = 0.2
        while self._waits:
            if self._poll_soon:
                self._poll_soon, pause = False, 0.2
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
            pause = min(pause * 1.5, 3.0)
            ids = list(self._waits)
            try:
                found: dict[str, dict[str, Any]] = {}
                for start in range(0, len(ids), 200):  # EC2 takes 200 values per filter
                    chunk = ids[start : start + 200]
                    for instance in await self.instances(value_filters({"instance-id": chunk})):
                        found[instance["InstanceId"]] = instance
            except ProviderError as exc:
                for waits in self._waits.values():
                    for wait in waits:
                        if not wait.future.done():
                            wait.future.set_exception(exc)
                self._waits.clear()
                return
            now = loop.time()
            for instance_id in ids:
                seen = found.get(instance_id)
                current = seen["State"]["Name"] if seen else None
                waits = self._waits.get(instance_id, [])
                for wait in list(waits):
                    if wait.future.done():  # its waiter was cancelled
                        waits.remove(wait)
                    elif seen is not None and current == wait.state:
                        wait.future.set_result(seen)
                        waits.remove(wait)
                    elif current == "terminated" or now > wait.deadline:
                        why = (
                            "terminated"
                            if current == "terminated"
                            else f"still {current or 'not visible'} after {wait.timeout:g}s"
                        )
                        wait.future.set_exception(
                            ProviderError(
                                f"instance {instance_id} did not become {wait.state}: {why}",
                                machine=wait.machine,
                            )
                        )
                        waits.remove(wait)
                if not waits:
                    self._waits.pop(instance_id, None)
