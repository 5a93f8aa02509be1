"""Every error the API answers with: JSON with a message and the offending field."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from provisor.core.errors import ParseErrors, ProvisorError
from provisor.services.context import Context


class ErrorDetail(BaseModel):
    message: str
    field: str | None = None
    location: str | None = None
    errors: list[ErrorDetail] | None = None  # one per problem when a file had several


class ErrorBody(BaseModel):
    error: ErrorDetail


def _body(detail: ErrorDetail) -> dict[str, Any]:
    return ErrorBody(error=detail).model_dump(exclude_none=True)


def _detail(exc: ProvisorError) -> ErrorDetail:
    return ErrorDetail(message=exc.message, field=exc.field, location=exc.location or None)


async def _provisor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProvisorError)
    ctx = getattr(request.state, "ctx", None)
    if exc.status == 404 and isinstance(ctx, Context):
        # Another tenant's object answers 404 like one that does not exist; the attempt
        # is still in the caller's audit log.
        await asyncio.to_thread(
            ctx.record_refusal,
            "access.not_found",
            f"{request.method} {request.url.path}",
            exc.message,
        )
    detail = _detail(exc)
    if isinstance(exc, ParseErrors):
        detail.errors = [_detail(e) for e in exc.errors]
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(_body(detail), status_code=exc.status, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(ErrorDetail(message=message, field=".".join(loc) or None))
    first = problems[0] if problems else ErrorDetail(message="invalid request")
    detail = ErrorDetail(
        message=first.message, field=first.field, errors=problems if len(problems) > 1 else None
    )
    return JSONResponse(_body(detail), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method the path has, not just the first route's
        headers["Allow"] = ", ".join(sorted(_methods(request)))
    return JSONResponse(
        _body(ErrorDetail(message=str(exc.detail))), status_code=exc.status_code, headers=headers
    )


def _methods(request: Request) -> set[str]:
    """The methods the OpenAPI documents for this path: of the paths it matches (`{name}`
    matches one segment), the most literal one's, as routing prefers `/hosts/import` to
    `/hosts/{name}`."""
    asked = request.url.path.split("/")
    by_parameters: dict[int, set[str]] = {}
    for template, operations in request.app.openapi()["paths"].items():
        parts = template.split("/")
        if len(parts) != len(asked):
            continue
        parameters = [p.startswith("{") and p.endswith("}") for p in parts]
        if all(
            (is_parameter and bool(given)) or part == given
            for part, given, is_parameter in zip(parts, asked, parameters, strict=True)
        ):
            methods = by_parameters.setdefault(sum(parameters), set())
            methods |= {method.upper() for method in operations}
    return by_parameters[min(by_parameters)] if by_parameters else set()


def install(app: FastAPI) -> None:
    app.add_exception_handler(ProvisorError, _provisor_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
