"""The pure core of fleet changes: loading, rendering, desired states, reports."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisor.core.changes.desired import (
    SYSCTL_FILE,
    HostPlan,
    applied,
    object_keys,
    plan_host,
    rollback_plan,
)
from provisor.core.changes.load import load_change_set
from provisor.core.changes.model import (
    MAX_FILE_BYTES,
    FileState,
    HostsEntry,
    LineResource,
    ObjectKey,
    PackageState,
    Resource,
    ServiceState,
    State,
    SysctlState,
    UserState,
)
from provisor.core.changes.render import HostContext, host_variables, render
from provisor.core.changes.report import change_diff, count_text, host_text
from provisor.core.errors import InvalidInput, ParseErrors

WEB = HostContext("web01", "10.0.0.1", facts={"os": "debian"}, groups=("web", "eu"))


def load(text: str):  # type: ignore[no-untyped-def]
    return load_change_set(textwrap.dedent(text), "cs.yaml")


def errors_of(text: str) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(ParseErrors) as caught:
        load(text)
    # each message starts with its field (what the CLI shows after file:line)
    assert all(e.message.startswith(f"{e.field}: ") for e in caught.value.errors if e.field)
    return [
        (e.line, e.field, e.message.removeprefix(f"{e.field}: ") if e.field else e.message)
        for e in caught.value.errors
    ]


def resources(text: str) -> list[Resource]:
    return render(load(text), WEB)


def file(content: bytes | None = b"", mode: int = 0o644, owner: str = "root") -> FileState:
    if content is None:
        return FileState(exists=False, kind="missing")
    return FileState(True, content, mode, owner, "root")


# --- loading -----------------------------------------------------------------


def test_loading_reports_every_mistake_with_line_and_field() -> None:
    found = errors_of(
        """\
        resources:
          - type: file
            path: /etc/a
            content: x
            colour: red
          - type: file
            path: /etc/b
            mode: 999
            content: x
          - type: line
            path: /etc/c
            line: a
            regexp: "(a"
          - type: file
            path: /etc/d
            template: |
              one
              {% if x %}
          - type: line
            path: /etc/e
          - type: hosts_entry
            address: 10.0.0.300
            names: [db]
          - type: line
            path: /etc/f
            line: "a\\nb"
        """
    )
    fields = {field: (line, message) for line, field, message in found}
    assert fields["resources[0].colour"][0] == 5
    assert "unknown field 'colour'" in fields["resources[0].colour"][1]
    assert fields["resources[1].mode"][0] == 8
    assert fields["resources[2].regexp"][0] == 13
    assert "missing )" in fields["resources[2].regexp"][1]
    assert fields["resources[3].template"][0] == 18  # the template's line 2
    assert "template line 2" in fields["resources[3].template"][1]
    assert fields["resources[4].line"][0] == 19
    assert "line" in fields["resources[4].line"][1]
    assert fields["resources[5].address"][0] == 22
    assert fields["resources[6].line"][1].endswith("may not contain a line break")


def test_loading_refuses_content_larger_than_the_bound() -> None:
    big = "é" * (MAX_FILE_BYTES // 2 + 1)  # the YAML itself is at most 1,000,000 characters
    found = errors_of(f"resources:\n  - type: file\n    path: /a\n    content: {big}\n")
    assert found == [
        (4, "resources[0].content", f"content is larger than {MAX_FILE_BYTES:,} bytes")
    ]


@pytest.mark.parametrize(
    ("resource", "field", "words"),
    [
        ("{type: file, path: /a}", "resources[0]", "needs content or template"),
        ("{type: file, path: /a, content: x, template: y}", "resources[0].template", "not both"),
        ("{type: line, path: /a, state: absent}", "resources[0].line", "`line` or `regexp`"),
        ("{type: hosts_entry, address: 10.0.0.1}", "resources[0].names", "at least one name"),
        ('{type: sysctl, name: a.b, value: "1\\n2"}', "resources[0].value", "line break"),
        ("{type: file, path: relative, content: x}", "resources[0].path", "pattern"),
        ("{type: mystery}", "resources[0]", "type"),
        ("{type: line, path: /a, line: x, regexp: '(?=a)'}", "resources[0].regexp", "lookahead"),
    ],
)
def test_each_kind_of_mistake_names_its_field(resource: str, field: str, words: str) -> None:
    found = errors_of(f"resources:\n  - {resource}\n")
    assert any(f == field and words in message and line == 2 for line, f, message in found), found


def test_numbers_are_read_as_written_where_text_is_meant() -> None:
    cs = load(
        "resources:\n  - {type: file, path: /a, mode: 0644}\n"
        "  - {type: sysctl, name: a.b, value: 1}\n"
    )
    assert cs.resources[0].mode == "0644"
    assert cs.resources[1].value == "1"


def test_a_file_that_only_sets_attributes_is_valid() -> None:
    assert load("resources: [{type: file, path: /a, owner: app}]").resources


# --- rendering ---------------------------------------------------------------


PRECEDENCE = """\
vars: {a: all, b: all, c: all}
group_vars: {web: {b: web, c: web}, eu: {c: eu}}
host_vars: {web01: {c: host}}
resources:
  - type: file
    path: /etc/motd
    template: "{{ a }} {{ b }} {{ vars.c }} {{ host.name }} {{ facts.os }} {{ groups[1] }}\\n"
"""


def test_variables_later_wins_and_templates_see_the_host() -> None:
    cs = load(PRECEDENCE)
    assert host_variables(cs, WEB) == {"a": "all", "b": "web", "c": "host"}
    (motd,) = render(cs, WEB)
    assert motd.content == "all web host web01 debian eu\n"  # type: ignore[union-attr]
    assert motd.template is None  # type: ignore[union-attr]
    other = HostContext("db1", "10.0.0.2", groups=("eu", "web"))
    assert host_variables(cs, other)["c"] == "web"  # group order decides


def test_lines_with_braces_render_and_content_does_not() -> None:
    rendered = resources(
        """\
        vars: {ntp: ntp.example}
        resources:
          - {type: line, path: /etc/a, line: "server {{ ntp }}"}
          - {type: file, path: /etc/b, content: "{{ ntp }}"}
        """
    )
    assert rendered[0].line == "server ntp.example"  # type: ignore[union-attr]
    assert rendered[1].content == "{{ ntp }}"  # type: ignore[union-attr]


def test_an_undefined_variable_names_host_resource_and_line() -> None:
    cs = load(
        """\
        resources:
          - id: sssd
            type: file
            path: /etc/sssd/sssd.conf
            template: "[sssd]\\nx\\nuri = {{ ldap_server }}\\n"
        """
    )
    with pytest.raises(InvalidInput) as caught:
        render(cs, WEB)
    assert str(caught.value) == (
        "web01: resources[0] (sssd).template line 3: 'ldap_server' is undefined"
    )


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(99999) %}{{ 'y' * 100 }}{% endfor %}",
        "{{ 'x' * 1000000000 }}",
    ],
)
def test_rendered_output_is_bounded(template: str) -> None:
    cs = load(f'resources: [{{type: file, path: /a, template: "{template}"}}]')
    with pytest.raises(InvalidInput, match="1,048,576"):
        render(cs, WEB)


def test_the_sandbox_refuses_python_internals() -> None:
    cs = load("""resources: [{type: file, path: /a, template: "{{ ''.__class__.__mro__ }}"}]""")
    with pytest.raises(InvalidInput, match="unsafe"):
        render(cs, WEB)


# --- desired states ----------------------------------------------------------


def plan(text: str, observed: dict[ObjectKey, State]) -> HostPlan:
    return plan_host(resources(text), observed)


F = ObjectKey("file", "/etc/a")


def test_file_content_mode_owner_and_removal() -> None:
    text = (
        "resources: [{type: file, path: /etc/a, content: \"b\\nc\\n\", mode: '0600', owner: app}]"
    )
    (change,) = plan(text, {F: file(b"a\nb\n")}).changes
    assert change.after == FileState(True, b"b\nc\n", 0o600, "app", "root")
    assert change.summary == "content (+1 -1 lines), mode 0644 -> 0600, owner root -> app"
    assert change.diff.splitlines()[:2] == ["--- /etc/a", "+++ /etc/a"]
    assert "+c" in change.diff
    (created,) = plan(
        "resources: [{type: file, path: /etc/a, content: x}]", {F: file(None)}
    ).changes
    assert created.summary == "created"
    assert created.after == FileState(True, b"x", 0o644, "root", "root")
    gone = plan("resources: [{type: file, path: /etc/a, state: absent}]", {F: file(b"x")})
    assert gone.changes[0].summary == "removed"
    assert not plan(
        "resources: [{type: file, path: /etc/a, state: absent}]", {F: file(None)}
    ).changes


def test_attributes_only_and_not_a_regular_file() -> None:
    text = "resources: [{type: file, path: /etc/a, mode: '0640'}]"
    assert plan(text, {F: file(b"keep")}).changes[0].after.content == b"keep"  # type: ignore[union-attr]
    other = plan(text, {F: FileState(True, None, 0o755, "root", "root", kind="other")})
    assert other.changes == [] and other.errors == [
        "file /etc/a: is not a regular file (resources[0])"
    ]
    missing = plan(text, {F: file(None)})
    assert "no such file" in missing.errors[0]


def test_binary_content_and_long_diffs_are_bounded() -> None:
    key = ObjectKey("file", "/bin/x")
    assert (
        change_diff(key, file(b"\xff\x00"), file(b"abc")) == "binary content differs (2 -> 3 bytes)"
    )
    long = change_diff(key, file(b""), file(b"".join(b"%d\n" % i for i in range(500))))
    assert long.splitlines()[-1] == "... 303 more lines"


def test_line_replaces_the_last_match_appends_and_removes() -> None:
    text = "resources: [{type: line, path: /etc/a, regexp: '^port', line: port 2}]"
    (change,) = plan(text, {F: file(b"port 1\nx\nport 3\n")}).changes
    assert change.after.content == b"port 1\nx\nport 2\n"  # type: ignore[union-attr]
    assert change.summary == "content (+1 -1 lines)"
    appended = plan(text, {F: file(b"x")}).changes[0].after
    assert appended.content == b"x\nport 2\n"  # type: ignore[union-attr]
    absent = "resources: [{type: line, path: /etc/a, regexp: '^port', state: absent}]"
    assert plan(absent, {F: file(b"port 1\nx\r\nport 3")}).changes[0].after.content == b"x\r\n"  # type: ignore[union-attr]


def test_line_needs_the_file_unless_create() -> None:
    text = "resources: [{type: line, path: /etc/a, line: x}]"
    assert plan(text, {F: file(None)}).errors == [
        "file /etc/a: no such file (create: true makes it) (resources[0])"
    ]
    created = plan(text.replace("x}", "x, create: true}"), {F: file(None)}).changes[0]
    assert created.after == FileState(True, b"x\n", 0o644, "root", "root")
    assert created.summary == "created"


def test_hosts_entry_keeps_one_line_per_address() -> None:
    key = ObjectKey("file", "/etc/hosts")
    text = "resources: [{type: hosts_entry, address: 10.0.0.5, names: [db, db.local]}]"
    before = b"127.0.0.1 localhost\n# 10.0.0.5 old\n10.0.0.5 x\n10.0.0.5 y\n"
    (change,) = plan(text, {key: file(before)}).changes
    assert change.after.content == (  # type: ignore[union-attr]
        b"127.0.0.1 localhost\n# 10.0.0.5 old\n10.0.0.5\tdb db.local\n"
    )
    assert host_text(plan(text, {key: file(b"")})).startswith(
        "~ file /etc/hosts: content (+1 -0 lines)\n    --- /etc/hosts"
    )


def test_users_are_created_changed_and_never_show_the_hash() -> None:
    key = ObjectKey("user", "app")
    text = """\
    resources:
      - {type: user, name: app, groups: [b, a], password_hash: "$6$salt$secret",
         authorized_keys: ["ssh-ed25519 AAA"]}
    """
    (created,) = plan(text, {key: UserState(False)}).changes
    assert created.after == UserState(
        True, ("a", "b"), "$6$salt$secret", b"ssh-ed25519 AAA\n", None, "/home/app"
    )
    before = UserState(True, ("a",), "$6$old", b"", "/bin/sh", "/srv/app")
    (change,) = plan(text, {key: before}).changes
    assert change.summary == "groups a -> a,b, password changed, authorized_keys (+1 -0)"
    assert "secret" not in host_text(plan(text, {key: before}))
    assert change.after.home == "/srv/app"  # type: ignore[union-attr]
    assert not plan(text, {key: change.after}).changes


def test_packages_install_upgrade_remove_and_refuse() -> None:
    key = ObjectKey("package", "nginx")
    apt = PackageState(None, "2.0-1", "apt")
    one = "resources: [{type: package, name: nginx}]"
    assert plan(one, {key: apt}).changes[0].summary == "install 2.0-1"
    installed = PackageState("1.0-1", "2.0-1", "apt")
    assert not plan(one, {key: installed}).changes
    latest = one.replace("nginx}", "nginx, state: latest}")
    assert plan(latest, {key: installed}).changes[0].summary == "upgrade 1.0-1 -> 2.0-1"
    absent = one.replace("nginx}", "nginx, state: absent}")
    assert plan(absent, {key: installed}).changes[0].summary == "remove 1.0-1"
    assert plan(one, {key: PackageState(None, None, "dnf")}).errors == [
        "package nginx: no package named nginx available from dnf (resources[0])"
    ]
    assert "neither apt nor dnf" in plan(one, {key: PackageState(None)}).errors[0]


def test_services_start_enable_and_restart_when_a_watched_file_changes() -> None:
    svc = ObjectKey("service", "sssd")
    conf = ObjectKey("file", "/etc/sssd/sssd.conf")
    text = """\
    resources:
      - {type: file, path: /etc/sssd/sssd.conf, content: new}
      - {type: service, name: sssd, state: running, enabled: true,
         restart_on: [/etc/sssd/sssd.conf]}
    """
    running = ServiceState(True, True, True, "systemd")
    changes = plan(text, {conf: file(b"old"), svc: running}).changes
    assert [(c.key, c.summary, c.restart) for c in changes][1] == (
        svc,
        "restart (/etc/sssd/sssd.conf changed)",
        True,
    )
    stopped = ServiceState(True, False, False, "systemd")
    started = plan(text, {conf: file(b"old"), svc: stopped}).changes[1]
    assert (started.summary, started.restart) == ("start, enable", False)
    assert not plan(text, {conf: file(b"new"), svc: running}).changes
    assert plan(text, {conf: file(b"new"), svc: ServiceState(False)}).errors == [
        "service sssd: no service named sssd (resources[1])"
    ]


def test_sysctl_compares_whitespace_and_persists_a_line() -> None:
    text = "resources: [{type: sysctl, name: net.ipv4.ip_local_port_range, value: '1024 65000'}]"
    key = ObjectKey("sysctl", "net.ipv4.ip_local_port_range")
    conf = ObjectKey("file", SYSCTL_FILE)
    assert object_keys(resources(text)) == [key, conf]
    observed: dict[ObjectKey, State] = {key: SysctlState("32768\t60999"), conf: file(None)}
    first = plan(text, observed)
    assert [c.summary for c in first.changes] == ["32768\t60999 -> 1024 65000", "created"]
    assert first.changes[1].after.content == (  # type: ignore[union-attr]
        b"net.ipv4.ip_local_port_range = 1024 65000\n"
    )
    after = applied(observed, first)
    after[key] = SysctlState("1024\t65000")  # as the kernel prints it
    assert not plan(text, after).changes
    assert "no kernel parameter" in plan(text, {key: SysctlState(None), conf: file(None)}).errors[0]


def test_a_failing_resource_leaves_other_objects_planned() -> None:
    text = """\
    resources:
      - {type: line, path: /etc/a, line: x}
      - {type: file, path: /etc/b, content: y}
    """
    result = plan(text, {F: file(None), ObjectKey("file", "/etc/b"): file(None)})
    assert [str(c.key) for c in result.changes] == ["file /etc/b"]
    assert len(result.errors) == 1
    assert "! file /etc/a" in host_text(result)


def test_rollback_restores_and_says_what_it_cannot() -> None:
    pkg, user = ObjectKey("package", "nginx"), ObjectKey("user", "app")
    snapshot: list[tuple[ObjectKey, State]] = [
        (F, file(b"old", 0o600)),
        (pkg, PackageState("1.0-1", None, "apt")),
        (user, UserState(False)),
    ]
    observed: dict[ObjectKey, State] = {
        F: file(b"new"),
        pkg: PackageState("2.0-1", "2.0-1", "apt"),
        user: UserState(True, (), None, None, "/bin/sh", "/home/app"),
    }
    result = rollback_plan(snapshot, observed)
    assert [c.summary for c in result.changes] == [
        "content (+1 -1 lines), mode 0644 -> 0600",
        "upgrade 2.0-1 -> 1.0-1",
        "removed",
    ]
    assert result.changes[1].notes == (
        "apt may not offer version 1.0-1 any more; the rollback tries it",
    )
    assert "/home/app" in result.changes[2].notes[0]
    assert not rollback_plan(snapshot, applied(observed, result)).changes


def test_counts() -> None:
    assert [count_text(n) for n in (0, 1, 2)] == ["up to date", "1 change", "2 changes"]
    assert host_text(HostPlan()) == "up to date"


# --- properties --------------------------------------------------------------

WORDS = st.sampled_from(["port 1", "port 2", "#port 3", "x", "", " port", "a=b", "port"])
FILES = (
    st.lists(WORDS, max_size=8)
    .map(lambda lines: "\n".join(lines))
    .flatmap(lambda text: st.sampled_from([text, text + "\n"]))
)


@settings(max_examples=300, deadline=None)
@given(
    before=FILES,
    line=WORDS.filter(bool),
    regexp=st.sampled_from([None, "^port", "^#?port", "x", "^$"]),
)
def test_line_is_idempotent_and_absent_undoes_present(
    before: str, line: str, regexp: str | None
) -> None:
    observed: dict[ObjectKey, State] = {F: file(before.encode())}
    present = LineResource(type="line", path="/etc/a", line=line, regexp=regexp)
    once = applied(observed, plan_host([present], observed))
    assert plan_host([present], once).changes == []
    assert line.encode() + b"\n" in once[F].content or once[F].content.endswith(line.encode())  # type: ignore[union-attr, operator]
    absent = LineResource(type="line", path="/etc/a", line=line, state="absent")
    gone = applied(once, plan_host([absent], once))
    assert line not in gone[F].content.decode().split("\n")  # type: ignore[union-attr]
    assert plan_host([absent], gone).changes == []


ADDRESSES = st.sampled_from(["10.0.0.5", "127.0.0.1", "::1", "0:0::1"])
HOSTS_LINES = st.one_of(
    st.builds(lambda a, n: f"{a} {n}", ADDRESSES, st.sampled_from(["db", "web x", "#c"])),
    st.sampled_from(["# 10.0.0.5 db", "", "  "]),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(HOSTS_LINES, max_size=6),
    address=ADDRESSES,
    names=st.lists(st.sampled_from(["db", "db.local", "web"]), min_size=1, max_size=3),
)
def test_hosts_entry_is_idempotent_and_absent_undoes_present(
    lines: list[str], address: str, names: list[str]
) -> None:
    key = ObjectKey("file", "/etc/hosts")
    observed: dict[ObjectKey, State] = {key: file("\n".join(lines).encode())}
    present = HostsEntry(type="hosts_entry", address=address, names=names)
    once = applied(observed, plan_host([present], observed))
    assert plan_host([present], once).changes == []
    text = once[key].content.decode()  # type: ignore[union-attr]
    assert f"{address}\t{' '.join(names)}" in text.split("\n")
    absent = HostsEntry(type="hosts_entry", address=address, state="absent")
    gone = applied(once, plan_host([absent], once))
    rows = gone[key].content.decode().split("\n")  # type: ignore[union-attr]
    assert address not in [row.split()[0] for row in rows if row.split()]
    assert plan_host([absent], gone).changes == []


def test_loops_that_print_nothing_are_bounded_too() -> None:
    nested = (
        "resources:\n  - type: file\n    path: /a\n    template: "
        "'{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}'\n"
    )
    with pytest.raises(InvalidInput, match="more than 1,000,000 steps"):
        render(load(nested), WEB)
    fine = "resources:\n  - type: file\n    path: /a\n    template: '{{ range(3) | list }}'\n"
    (rendered,) = render(load(fine), WEB)
    assert rendered.model_dump()["content"] == "[0, 1, 2]"
