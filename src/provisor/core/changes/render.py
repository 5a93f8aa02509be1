"""Rendering a change set for one host: its `template`s become `content`.

Only two places are templates: a file's `template` field, and a line resource's `line`
when it contains `{{` (a line such as `server {{ vars.ntp }}`). Everything else, a file's
`content` included, is taken as written, so a file holding `{{` verbatim needs no
escaping. Rendering runs in Jinja2's sandbox (no attribute of Python's internals is
reachable), with undefined variables as errors, and stops at `MAX_FILE_BYTES` of output.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment, safe_range

from provisor.core.changes.model import (
    MAX_FILE_BYTES,
    ChangeSet,
    FileResource,
    LineResource,
    Resource,
)
from provisor.core.errors import InvalidInput

__all__ = ["HostContext", "host_variables", "render"]

_TEMPLATE_FILENAME = "<template>"  # what Jinja2 names a template made from a string


@dataclass(frozen=True)
class HostContext:
    """What a template knows of the host it is rendered for."""

    name: str
    address: str
    facts: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()


def host_variables(cs: ChangeSet, host: HostContext) -> dict[str, Any]:
    """The change set's variables for `host`: `vars`, then the `group_vars` of each of
    its groups in the order of `host.groups`, then its `host_vars`; later wins."""
    found: dict[str, Any] = dict(cs.vars)
    for group in host.groups:
        found.update(cs.group_vars.get(group, {}))
    found.update(cs.host_vars.get(host.name, {}))
    return found


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded: `{{ 'x' * 10**9 }}` would otherwise build
    a gigabyte in one chunk, before the output bound sees it."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > 1000:
                raise OverflowError("an exponent larger than 1000")
            return left**right
        for times, other in ((right, left), (left, right)):
            sequence = isinstance(other, str | list | tuple | bytes)
            if isinstance(times, int) and sequence and times * len(other) > MAX_FILE_BYTES:
                raise OverflowError(f"a repetition longer than {MAX_FILE_BYTES:,}")
        return left * right


MAX_STEPS = 1_000_000
"""Items all of one template's `range`s may yield together: a loop that prints nothing
is not bounded by the output bound, and nested ranges multiply."""


def _bounded_range(*args: int) -> Iterator[int]:
    """The sandbox's range (at most 100,000 items), counting toward `MAX_STEPS`."""
    steps = _STEPS.get()
    for item in safe_range(*args):
        steps[0] += 1
        if steps[0] > MAX_STEPS:
            raise OverflowError(f"loops over range() took more than {MAX_STEPS:,} steps")
        yield item


_STEPS: ContextVar[list[int]] = ContextVar("provisor_template_steps")


def _environment() -> SandboxedEnvironment:
    environment = _BoundedSandbox(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    environment.globals["range"] = _bounded_range
    return environment


def _context(cs: ChangeSet, host: HostContext) -> dict[str, Any]:
    variables = host_variables(cs, host)
    # Each variable is also a name of its own; the host's names win over a variable's.
    return {
        **variables,
        "host": {"name": host.name, "address": host.address},
        "facts": host.facts,
        "tags": host.tags,
        "groups": list(host.groups),
        "vars": variables,
    }


def render(cs: ChangeSet, host: HostContext) -> list[Resource]:
    """The change set's resources for `host`, every template rendered (a file's into
    `content`, its `template` then None); raises `InvalidInput` naming the host, the
    resource, the field and the template's line."""
    environment = _environment()
    context = _context(cs, host)
    rendered: list[Resource] = []
    for index, resource in enumerate(cs.resources):
        if isinstance(resource, FileResource) and resource.template is not None:
            where = _where(host, index, resource, "template")
            content = _render_one(environment, resource.template, context, where)
            resource = resource.model_copy(update={"content": content, "template": None})
        elif isinstance(resource, LineResource) and resource.line and "{{" in resource.line:
            where = _where(host, index, resource, "line")
            line = _render_one(environment, resource.line, context, where)
            if "\n" in line or "\r" in line:
                raise InvalidInput(f"{where}: renders to more than one line")
            resource = resource.model_copy(update={"line": line})
        rendered.append(resource)
    return rendered


def _where(host: HostContext, index: int, resource: Resource, name: str) -> str:
    label = f" ({resource.id})" if resource.id else ""
    return f"{host.name}: resources[{index}]{label}.{name}"


def _render_one(
    environment: SandboxedEnvironment, text: str, context: dict[str, Any], where: str
) -> str:
    try:
        template = environment.from_string(text)
    except jinja2.TemplateSyntaxError as exc:  # load_change_set has refused these already
        raise InvalidInput(f"{where} line {exc.lineno}: {exc.message}") from None
    chunks: list[str] = []
    size = 0
    steps = _STEPS.set([0])  # this template's own count
    try:
        for chunk in template.generate(context):
            size += len(chunk.encode("utf-8", "surrogatepass"))
            if size > MAX_FILE_BYTES:
                raise InvalidInput(f"{where}: renders to more than {MAX_FILE_BYTES:,} bytes")
            chunks.append(chunk)
    except InvalidInput:
        raise
    except Exception as exc:  # whatever a template does wrong is the template's fault
        line = _template_line(exc.__traceback__)
        at = f" line {line}" if line else ""
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise InvalidInput(f"{where}{at}: {message}") from None
    finally:
        _STEPS.reset(steps)
    return "".join(chunks)


def _template_line(tb: types.TracebackType | None) -> int | None:
    """The template line the error happened on: Jinja2 rewrites tracebacks so a frame
    of the template's own code carries the template's file name and line."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
