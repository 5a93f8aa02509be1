"""The docs against the CLI they describe.

The CLI reference (docs/cli.md) is generated from the CLI and must match it. Every
command README.md and docs/ show is parsed by the real CLI's parser (doc_commands.py),
so a renamed command, option or choice fails here. The commands a new user types first
run for real, in a `provisor` process of their own, against testbed hosts started as
docs/testbed.md says: the README's tour and the testbed walk-through, and the examples
whose output a doc shows, compared line by line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from doc_commands import (
    PROVISOR,
    ROOT,
    TESTBED,
    DocCommand,
    all_commands,
    commands_in,
    documented,
    problem,
    usage_variants,
)
from machines_needed import requires_root
from provisor.testing.blocks import ROOT_TEST_DIR
from provisor_cli import Provisor

# The files examples whose output a doc shows read (the doc shows the errors only).
INPUTS = {
    ("README.md", "provisor hosts import hosts.txt"): (
        "hosts.txt",
        "web01\nweb02:99999\nweb03\nbad!host\n",
    ),
    ("docs/import.md", "provisor hosts import inventory.ini"): (
        "inventory.ini",
        "[web]\nweb1\nweb2 ansible_port=99999\n\n[app]\napp1\nweb[01:]\n"
        "[web:children]\nshared\n\n[db:children]\nshared\n",
    ),
}
# Examples whose output needs what is not here: parsed like every command, not run.
OUTPUT_NOT_COMPARED = {("docs/providers.md", "provisor providers check lab")}  # a cloud


def test_cli_reference_is_current(tmp_path: Path) -> None:
    generated = tmp_path / "cli.md"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_docs.py"), str(generated)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    current = (ROOT / "docs" / "cli.md").read_text()
    assert generated.read_text() == current, "docs/cli.md is stale: run `make docs`"
    assert "&#x27;" not in current and "&quot;" not in current  # readable as plain text
    assert "&gt;" not in current and "\\[" not in current
    # What rich markup would drop, and a tag Markdown would hide, are there as written.
    assert "NAME[@VERSION]" in current and "[user@]host[:port]" in current
    assert "LOCAL_DIR/&lt;host>/" in current


# Every command, parsed


def test_every_documented_command_parses() -> None:
    commands = all_commands()
    wrong = [f"{c}\n    {failure}" for c in commands if (failure := problem(c))]
    assert not wrong, "the CLI refuses these commands of the docs:\n" + "\n".join(wrong)
    # What the docs hold, so that a reader that found nothing cannot pass unnoticed.
    shown = {c.path for c in commands if c.kind != "mention"}
    assert {"README.md", "docs/fleet.md", "docs/testbed.md", "docs/operations.md"} <= shown
    assert sum(c.kind == "command" for c in commands) > 120


SAMPLE = """\
Prose names `provisor hosts list --output json` and
`provisor backup
stores add`.

```console
$ provisor hosts add web01 \\
    --address 10.0.0.5   # a comment
added host web01
$ export PROVISOR_TENANT=acme
```

```sh
PROVISOR_TENANT=acme provisor hosts list | head -3 ; provisor jobs list &
vault read -field=pw x | provisor up shop --param 'pw=-' ...   # from standard input
provisor tokens add alice > alice.token
* * * * * provisor alerts dispatch --once
python3 -m provisor.testing start 2 --inventory tb.ini
provisor hosts show <name> > host.json
curl -s "http://localhost/provisor $(cat alice.token)"
```

```yaml
script: provisor hosts list
```

```
provisor patch list [TARGET] [--output json|table]
    [--security]
```

    provisor groups add web --rule 'name =~ "^web"'
"""


def test_commands_are_read_as_a_shell_reads_them() -> None:
    def words(c: DocCommand) -> str:  # quoted as a shell would need them
        return shlex.join(c.args) if c.kind == "command" else " ".join(c.args)

    found = [
        (c.line, c.kind, c.program, words(c), c.output) for c in commands_in(Path("x.md"), SAMPLE)
    ]
    assert found == [
        (1, "mention", PROVISOR, "hosts list --output json", ()),
        (2, "mention", PROVISOR, "backup stores add", ()),
        (6, "command", PROVISOR, "hosts add web01 --address 10.0.0.5", ("added host web01",)),
        (13, "command", PROVISOR, "hosts list", ()),
        (13, "command", PROVISOR, "jobs list", ()),
        (14, "command", PROVISOR, "up shop --param pw=-", ()),
        (15, "command", PROVISOR, "tokens add alice", ()),
        (16, "command", PROVISOR, "alerts dispatch --once", ()),
        (17, "command", TESTBED, "start 2 --inventory tb.ini", ()),
        (18, "command", PROVISOR, "hosts show '<name>'", ()),
        (27, "usage", PROVISOR, "patch list [TARGET] [--output json|table] [--security]", ()),
        (31, "command", PROVISOR, "groups add web --rule 'name =~ \"^web\"'", ()),
    ]
    assert usage_variants(("patch", "list", "[TARGET]", "[--output", "json|table]")) == [
        ["patch", "list", "TARGET", "--output", "json"],
        ["patch", "list"],
        ["patch", "list", "TARGET", "--output", "table"],
    ]


@pytest.mark.parametrize(
    ("kind", "program", "words", "refusal"),
    [
        ("command", "provisor", "hostz list", "No such command 'hostz'"),
        ("command", "provisor", "hosts", "`hosts` needs a subcommand"),
        ("command", "provisor", "hosts add", "Missing argument 'name'"),
        ("command", "provisor", "hosts add web01 --adress x", "No such option: --adress"),
        ("command", "provisor", "hosts add web01 --port http", "Invalid value for '--port'"),
        ("command", "provisor", "run group:web -p 5", "Missing argument 'command'"),
        ("usage", "provisor", "hosts import FILE [--format auto|yaml]", "'yaml' is not one of"),
        ("usage", "provisor", "hosts list [--bogus]", "No such option: --bogus"),
        ("mention", "provisor", "hosts frobnicate NAME", "no command 'frobnicate'"),
        ("mention", "provisor", "worker status|pause", "no command 'pause'"),
        ("mention", "provisor", "hosts add NAME --bogus", "no option --bogus for `provisor hosts"),
        ("command", TESTBED, "start", "the following arguments are required: N"),
        ("command", TESTBED, "start 2 --inventry x", "unrecognized arguments: --inventry"),
    ],
)  # fmt: skip
def test_a_command_the_cli_refuses_is_named(
    kind: str, program: str, words: str, refusal: str
) -> None:
    command = DocCommand("x.md", 1, f"{program} {words}", program, tuple(words.split()), kind)
    failure = problem(command)
    assert failure is not None and refusal in failure, failure


# The first commands, run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class StartedHosts:
    """The hosts docs/testbed.md starts, in a base dir of this module's own."""

    base_dir: Path
    workdir: Path  # where the walk-through runs: its testbed.ini is here

    def run(self, command: DocCommand, *here: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        """The documented testbed command, with `here` replacing words the doc has (a
        smaller count), on this module's base dir."""
        args = _replaced(command.args, here)
        done = subprocess.run(
            [sys.executable, "-m", "provisor.testing", *args, "--base-dir", str(self.base_dir)],
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=300,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
        return done

    def inventory(self) -> dict[str, tuple[str, str]]:
        """name -> (address, client key) of the hosts testbed.ini lists."""
        found = {}
        for line in (self.workdir / "testbed.ini").read_text().splitlines()[1:]:
            name, *pairs = line.split()
            values = dict(pair.split("=", 1) for pair in pairs)
            found[name] = (values["ansible_host"], values["ansible_ssh_private_key_file"])
        return found


def _replaced(args: tuple[str, ...], here: tuple[tuple[str, str], ...]) -> list[str]:
    replace = dict(here)
    return [replace.get(a, a) for a in args]


@pytest.fixture(scope="module")
def testbed_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartedHosts]:
    """Two hosts, started by the first command of docs/testbed.md's walk-through (20
    there), destroyed by its last."""
    base = ROOT_TEST_DIR / f"docs-{secrets.token_hex(4)}"  # not /tmp: the hosts overlay it
    base.mkdir(parents=True)
    (base / ".session-pid").write_text(f"{os.getpid()}\n")  # a live owner: not `cleanup`'s
    testbed = StartedHosts(base, tmp_path_factory.mktemp("testbed-walkthrough"))
    try:
        started = testbed.run(
            documented(
                "docs/testbed.md", "python -m provisor.testing start 20 --inventory testbed.ini"
            ),
            ("20", "2"),
        )
        assert "2 host(s) started" in started.stdout
        yield testbed
        destroyed = testbed.run(
            documented("docs/testbed.md", "python -m provisor.testing destroy --all")
        )
        assert destroyed.stdout.startswith("destroyed "), destroyed.stdout  # says what
    finally:
        subprocess.run(
            [sys.executable, "-m", "provisor.testing", "cleanup", str(base)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


class User:
    """A user at a shell: a `provisor` of their own (PROVISOR_HOME, HOME), typing the
    docs' commands in `workdir`, where examples/ is the repository's."""

    def __init__(self, root: Path, workdir: Path | None = None) -> None:
        self.home = root / "home"
        self.workdir = workdir or root / "work"
        (self.home / ".ssh").mkdir(parents=True)
        self.workdir.mkdir(exist_ok=True)
        if not (self.workdir / "examples").exists():
            (self.workdir / "examples").symlink_to(ROOT / "examples")
        self.cli = Provisor(root / "provisor-home")
        self.cli.env["HOME"] = str(self.home)
        for variable in ("PROVISOR_SERVER", "PROVISOR_TOKEN", "PROVISOR_TENANT"):
            self.cli.env.pop(variable, None)

    def run(
        self,
        command: DocCommand,
        *here: tuple[str, str],
        status: int = 0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The documented command as the shell would run it here (`~` is HOME), with
        `here` replacing words of the doc that name what is different here."""
        args = [
            str(self.home) + a[1:] if a.startswith("~/") else a
            for a in _replaced(command.args, here)
        ]
        done = subprocess.run(
            self.cli.command(*args),
            capture_output=True,
            text=True,
            env=self.cli.env,
            cwd=self.workdir,
            timeout=300,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == status, (
            f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done


@pytest.mark.testbed
@pytest.mark.slow
@requires_root  # hosts in namespace mode, as CI runs them
def test_the_testbed_walkthrough(testbed_hosts: StartedHosts, tmp_path: Path) -> None:
    """docs/testbed.md: hosts started, imported, used, more started, listed."""
    user = User(tmp_path, workdir=testbed_hosts.workdir)  # testbed.ini is there
    doc = "docs/testbed.md"

    imported = user.run(documented(doc, "provisor hosts import testbed.ini"))
    assert "2 host(s) created" in imported.stdout and "1 group(s) created" in imported.stdout
    ran = user.run(documented(doc, "provisor run group:testbed -- hostname"))
    assert sorted(ran.stdout.split()) == ["tb01", "tb01:", "tb02", "tb02:"]
    planned = user.run(
        documented(doc, "provisor config plan examples/changes/hosts-file.yaml group:testbed")
    )
    assert "+10.0.0.5\tldap2.example.test ldap2" in planned.stdout

    more = testbed_hosts.run(
        documented(doc, "python -m provisor.testing start 5 --inventory testbed.ini"), ("5", "1")
    )
    assert more.stdout.startswith("tb03")
    assert sorted(testbed_hosts.inventory()) == ["tb01", "tb02", "tb03"]  # the file lists all
    listed = testbed_hosts.run(documented(doc, "python -m provisor.testing list"))
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["tb01", "tb02", "tb03"]


@pytest.mark.testbed
@pytest.mark.slow
@requires_root  # namespace-mode hosts: the README's web01 is logged in to as root, port 22
def test_the_readme_tour(testbed_hosts: StartedHosts, tmp_path: Path) -> None:
    """README.md's five-minute tour, from the inventory to the REST API, on testbed
    hosts: web01 (10.0.0.5 in the README) is the testbed's tb01, logged in to as root
    with the testbed's key as ~/.ssh/id_ed25519, and ~/pssh-hosts.txt names tb02.

    Only what a new user types first runs here; the rest (deployments, backups, the
    cloud, patches, passwords, an Ansible import, smart groups, kill) is parsed above and
    run by the tests of its own part, to keep this test's time small."""
    user = User(tmp_path)
    hosts = testbed_hosts.inventory()
    (tb01, key), (tb02, _) = hosts["tb01"], hosts["tb02"]
    shutil.copy(key, user.home / ".ssh" / "id_ed25519")
    (user.home / "pssh-hosts.txt").write_text(f"root@{tb02}:22\n")
    (user.workdir / "site").mkdir()
    (user.workdir / "site" / "index.html").write_text("<p>hello</p>\n")
    doc = "README.md"

    def run(
        command_line: str, *here: tuple[str, str], input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return user.run(documented(doc, command_line), *here, input=input)

    # Hosts, groups
    run(
        "provisor hosts add web01 --address 10.0.0.5 --user deploy --tag env=prod --fact rack=r12",
        ("10.0.0.5", tb01),
        ("deploy", "root"),
    )
    assert "1 host(s) created" in run("provisor hosts import ~/pssh-hosts.txt").stdout
    run("provisor hosts gather '*'")
    assert "1 host(s)" in run("provisor hosts list 'web*&tag:env=prod'").stdout
    shown = json.loads(run("provisor hosts show web01 --output json").stdout)
    assert (shown["address"], shown["tags"]) == (tb01, {"env": "prod"})
    assert (shown["facts"]["rack"], shown["facts"]["os"]) == ("r12", "debian")  # gathered
    run("provisor groups add site")
    run("provisor groups add web --parent site --member web01")
    run("""provisor groups add prod-debian --rule 'facts.os == "debian" and tags.env == "prod"'""")
    assert "web01" in run("provisor groups members prod-debian").stdout

    # The fleet
    assert "load average" in run("provisor run group:web -- uptime").stdout
    folded = run(
        "provisor run 'web*&tag:env=prod' -p 200 -t 30 --output fold -- 'cat /etc/debian_version'"
    )
    assert "web01 (1): ok" in folded.stdout
    run("provisor copy group:web ./site/ /srv/")
    assert "gather" in run("provisor jobs show 1").stdout  # the first job: hosts gather
    planned = run("provisor config plan examples/changes/hosts-file.yaml group:web")
    assert "web01: ~ file /etc/hosts" in planned.stdout
    events = run("provisor events --since 1h").stdout
    assert "hosts.imported" in events and "job.finished" in events

    # The REST API, the CLI through it
    run("provisor users add alice --tenant default --role operator")
    run("provisor keys add deploy ~/.ssh/id_ed25519")
    run("provisor hosts set web01 --credentials key:deploy")
    port = str(_free_port())
    url = ("http://127.0.0.1:8080", f"http://127.0.0.1:{port}")
    serving = documented(doc, "provisor server --port 8080")  # `&`: in the background
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        user.cli.command(*_replaced(serving.args, (("8080", port),))),
        env=user.cli.env,
        cwd=user.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        token = run("provisor tokens add alice").stdout  # `> alice.token`
        _wait_until_it_answers(server, url[1], tmp_path / "server.log")
        run("provisor login http://127.0.0.1:8080", url, input=token)  # `< alice.token`
        through = run("provisor run --server http://127.0.0.1:8080 group:web -- uptime", url)
        assert "web01:" in through.stdout and "load average" in through.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _wait_until_it_answers(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"`provisor server` did not answer: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def _shows(expected: str, actual: str) -> bool:
    """A line of output as a doc shows it: `...` stands for any text."""
    pattern = ".*".join(re.escape(part) for part in expected.rstrip().split("..."))
    return re.fullmatch(pattern, actual.rstrip()) is not None


@pytest.mark.slow
def test_examples_print_what_the_docs_show(tmp_path: Path) -> None:
    """Each `$ provisor ...` a doc shows with its output prints that output (an error
    with a non-zero exit status), run in the order the docs have them."""
    user = User(tmp_path)
    shown = [
        c
        for c in all_commands()
        if c.output and c.program != TESTBED and (c.path, c.text) not in OUTPUT_NOT_COMPARED
    ]
    assert len(shown) >= 6
    for command in shown:
        if (command.path, command.text) in INPUTS:
            name, content = INPUTS[command.path, command.text]
            (user.workdir / name).write_text(content)
        failed = command.output[0].startswith("error:")
        done = user.run(command, status=2 if failed else 0)
        printed = (done.stdout + done.stderr).splitlines()
        assert len(printed) == len(command.output) and all(
            _shows(e, a) for e, a in zip(command.output, printed, strict=True)
        ), (
            f"{command} prints\n"
            + "\n".join(printed)
            + "\nnot, as the doc shows,\n"
            + "\n".join(command.output)
        )
