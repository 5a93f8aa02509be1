"""Who calls: the bearer token and the tenant selector, turned into a service Context.

Every route but `/health` depends on `context`. A client that keeps presenting tokens
that are refused is slowed down: past `sign_in_failures` of them (a setting, 20 by
default) within `WINDOW` seconds it gets 429 until the window has passed, so tokens
cannot be guessed at line speed.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from provisor.core.errors import ProvisorError, Unauthenticated
from provisor.services import identity
from provisor.services.context import Context

WINDOW = 60.0
_CLIENTS = 10_000  # clients remembered at most; the oldest are forgotten first


class TooManyFailures(ProvisorError):
    status = 429


class SignInGuard:
    """Failed sign-ins per client address, in a sliding window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, client: str) -> None:
        recent = self._recent(client)
        if len(recent) >= self.limit:
            wait = int(recent[0] + WINDOW - time.monotonic()) + 1
            raise TooManyFailures(
                f"too many refused tokens from {client}: try again in {wait} s",
                field="authorization",
            )

    def failed(self, client: str) -> None:
        self._recent(client).append(time.monotonic())
        self._failures.move_to_end(client)
        while len(self._failures) > _CLIENTS:
            self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque(maxlen=self.limit))
        while times and times[0] < time.monotonic() - WINDOW:
            times.popleft()
        return times


# Documented in the OpenAPI as the HTTP bearer scheme; the check itself is ours below.
_BEARER = HTTPBearer(auto_error=False, description="a provisor token: pvs_<id>_<secret>")


def context(
    request: Request,
    authorization: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
    tenant: Annotated[
        str | None,
        Header(
            alias="X-Provisor-Tenant",
            description="the tenant to act in: one the token's user belongs to "
            "(needed only when it belongs to several)",
        ),
    ] = None,
) -> Context:
    state = request.app.state
    client = request.client.host if request.client else "unknown"
    state.sign_ins.check(client)
    credential = authorization.credentials if authorization else None
    try:
        principal = identity.authenticate(state.store, credential, tenant=tenant, client=client)
    except Unauthenticated:
        if credential:  # a token that was tried and refused: what guessing looks like
            state.sign_ins.failed(client)
        raise
    ctx = Context(
        store=state.store,
        actor=principal.user,
        tenant=principal.tenant,
        role=principal.role,
        home=state.settings.home,
    )
    request.state.ctx = ctx  # for the error handler: a 404 is a refusal, recorded too
    return ctx


Ctx = Annotated[Context, Depends(context)]


# A row id in a path: what the database can hold, so a huge number is a 422, not a 500.
Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="an id, as listed")]
