"""Reading a change set from YAML: every problem (syntax, schema, the rules a resource's
fields must follow together, regular expressions, template syntax) reported at once in
one `ParseErrors`, each at its line and column and naming its field, e.g.
`resources[2].regexp`, before anything touches a host.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, TypeAdapter, ValidationError

from provisor.core.changes.model import (
    MAX_FILE_BYTES,
    ChangeSet,
    FileResource,
    HostsEntry,
    LineResource,
    PackageResource,
    Resource,
    ServiceResource,
    SysctlResource,
    UserResource,
)
from provisor.core.errors import InvalidInput, ParseErrors
from provisor.core.regex import RegexError, compile_regex
from provisor.core.yamlpos import Document, Path, field_type, located_errors, parse_yaml

__all__ = ["MAX_ERRORS", "field_name", "load_change_set"]

MAX_ERRORS = 200
"""Errors reported per change set."""

_MODELS: dict[str, type[BaseModel]] = {
    "file": FileResource,
    "line": LineResource,
    "hosts_entry": HostsEntry,
    "user": UserResource,
    "package": PackageResource,
    "service": ServiceResource,
    "sysctl": SysctlResource,
}
_RESOURCE = TypeAdapter[Resource](Resource)
# Only for syntax: rendering makes its own environment per run.
_SYNTAX = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def field_name(path: Path) -> str:
    """`("resources", 2, "regexp")` -> `resources[2].regexp`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_change_set(text: str, source: str = "<change set>") -> ChangeSet:
    """Read a change set; raises one `ParseErrors` listing every problem, each located."""
    document = parse_yaml(text, source)
    if not isinstance(document.data, dict):
        at = document.mark(())
        problem = InvalidInput(
            "a change set is a YAML mapping with at least `resources`",
            source=source,
            line=at.line,
            column=at.column,
        )
        raise ParseErrors([problem], source=source)
    _texts_as_written(document)
    errors: list[InvalidInput] = []
    change_set: ChangeSet | None = None
    try:
        change_set = ChangeSet.model_validate(document.data)
    except ValidationError as exc:
        for error in located_errors(exc, document, source, ChangeSet, limit=MAX_ERRORS):
            error.field = _bracketed(error.field)
            errors.append(error)
    raw_resources = document.data.get("resources")
    if isinstance(raw_resources, list):
        for index, raw in enumerate(raw_resources):
            errors += _resource_errors(document, text, source, index, raw)
    if errors or change_set is None:
        raise _collected(errors, source)
    return change_set


def _bracketed(dotted: str | None) -> str | None:
    """located_errors' `resources.2.regexp` as `resources[2].regexp`."""
    return None if dotted is None else re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", dotted)


def _texts_as_written(document: Document) -> None:
    """Where a resource's field is text but YAML read a number or a boolean (`mode: 0644`
    is the octal int 420 in YAML 1.1, `value: 1` an int), use the text as written."""
    resources = document.data.get("resources")
    if not isinstance(resources, list):
        return
    for path, written in document.texts.items():
        if len(path) < 3 or path[0] != "resources" or not isinstance(path[1], int):
            continue
        raw = resources[path[1]] if path[1] < len(resources) else None
        model = _MODELS.get(str(raw.get("type"))) if isinstance(raw, dict) else None
        value = document.get(path)
        if model is None or isinstance(value, str) or value is None:
            continue
        if field_type(model, path[2:]) is str:
            parent = document.get(path[:-1])
            if isinstance(parent, dict | list):
                parent[path[-1]] = written  # type: ignore[index]


def _collected(errors: list[InvalidInput], source: str) -> ParseErrors:
    unique: dict[tuple[Any, ...], InvalidInput] = {}
    for error in errors:
        unique.setdefault((error.line, error.column, error.field, error.message), error)
    for error in unique.values():  # the field in the message: the CLI shows file:line: message
        if error.field and not error.message.startswith(error.field):
            error.message = f"{error.field}: {_plain(error.field, error.message)}"
    ordered = sorted(unique.values(), key=lambda e: (e.line or 0, e.column or 0))
    if not ordered:  # cannot happen: a failed validation always says why
        ordered = [InvalidInput("invalid change set", source=source)]
    return ParseErrors(list(ordered[:MAX_ERRORS]), source=source)


def _plain(field: str, message: str) -> str:
    """pydantic's pattern message, said as what to write instead."""
    if message.startswith("String should match pattern"):
        if field.endswith(".mode"):
            return 'give the permission bits in octal, e.g. "0644"'
        return f"not a valid {field.rsplit('.', 1)[-1]} ({message.lower()})"
    return message


class _Checker:
    """The located errors of one resource's fields."""

    def __init__(self, document: Document, text: str, source: str, index: int) -> None:
        self.document, self.text, self.source, self.index = document, text, source, index
        self.errors: list[InvalidInput] = []

    def fail(self, name: str, message: str, *, value_line: int = 0) -> None:
        """An error at field `name`; `value_line` (1-based) is a line inside a block
        scalar's value (a template's own line), placed in the file when it can be."""
        path: Path = ("resources", self.index, name) if name else ("resources", self.index)
        at = self.document.mark(path)
        line = at.line
        written = self.text.splitlines()[at.line - 1 : at.line]
        if value_line and written and written[0][at.column - 1 : at.column] in ("|", ">"):
            line += value_line  # a block scalar starts on the line after its indicator
        self.errors.append(
            InvalidInput(
                message,
                source=self.source,
                line=line,
                column=at.column,
                field=field_name(path),
            )
        )

    def no_newline(self, name: str, value: str | None) -> None:
        if value is not None and ("\n" in value or "\r" in value):
            self.fail(name, f"`{name}` is one line: it may not contain a line break")

    def template(self, name: str, text: str) -> None:
        try:
            _SYNTAX.parse(text)
        except jinja2.TemplateSyntaxError as exc:
            self.fail(name, f"template line {exc.lineno}: {exc.message}", value_line=exc.lineno)

    def regexp(self, name: str, pattern: str) -> None:
        try:
            compile_regex(pattern)
        except RegexError as exc:
            self.fail(name, exc.message)


def _resource_errors(
    document: Document, text: str, source: str, index: int, raw: Any
) -> list[InvalidInput]:
    """What is wrong with a resource that pydantic accepts (the rest it reported)."""
    try:
        resource = _RESOURCE.validate_python(raw)
    except ValidationError:
        return []
    check = _Checker(document, text, source, index)
    if isinstance(resource, FileResource):
        _check_file(check, resource)
    elif isinstance(resource, LineResource):
        _check_line(check, resource)
    elif isinstance(resource, HostsEntry):
        _check_hosts_entry(check, resource)
    elif isinstance(resource, UserResource):
        check.no_newline("password_hash", resource.password_hash)
        if resource.password_hash is not None and ":" in resource.password_hash:
            check.fail("password_hash", "a crypt(3) hash has no `:`")
        for i, key in enumerate(resource.authorized_keys or []):
            check.no_newline(f"authorized_keys[{i}]", key)
    elif isinstance(resource, SysctlResource):
        check.no_newline("value", resource.value)
    elif isinstance(resource, ServiceResource) and (
        resource.state is None and resource.enabled is None and not resource.restart_on
    ):
        check.fail("", "a service resource says at least one of state, enabled, restart_on")
    return check.errors


def _check_file(check: _Checker, resource: FileResource) -> None:
    attributes = (resource.mode, resource.owner, resource.group)
    if resource.state == "absent":
        for name in ("content", "template"):
            if getattr(resource, name) is not None:
                check.fail(name, f"a file that is absent has no {name}")
    elif resource.content is not None and resource.template is not None:
        check.fail("template", "a file has content or a template, not both")
    elif resource.content is None and resource.template is None and attributes == (None,) * 3:
        check.fail(
            "",
            "a present file needs content or template (or only mode/owner/group to set "
            "an existing file's attributes)",
        )
    for name in ("content", "template"):
        text = getattr(resource, name)
        if text is not None and len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
            check.fail(name, f"{name} is larger than {MAX_FILE_BYTES:,} bytes")
    if resource.template is not None:
        check.template("template", resource.template)


def _check_line(check: _Checker, resource: LineResource) -> None:
    if resource.state == "present" and resource.line is None:
        check.fail("line", "missing required field 'line' (state: present)")
    if resource.state == "absent" and resource.line is None and resource.regexp is None:
        check.fail("line", "an absent line needs `line` or `regexp`")
    check.no_newline("line", resource.line)
    if resource.line is not None and "{{" in resource.line:
        check.template("line", resource.line)
    if resource.regexp is not None:
        check.regexp("regexp", resource.regexp)


def _check_hosts_entry(check: _Checker, resource: HostsEntry) -> None:
    try:
        ipaddress.ip_address(resource.address)
    except ValueError:
        check.fail("address", f"{resource.address!r} is not an IPv4 or IPv6 address")
    if resource.state == "present" and not resource.names:
        check.fail("names", "a present hosts entry needs at least one name")
