"""Local apt repositories for tests: small packages built here, served as file:// repos.

Nothing reaches the network: a testbed host is pointed at these repositories only (its
/etc is its own copy-on-write layer, so rewriting its sources touches no other host and
not the machine).

A namespace-mode host sees its own host directory at the same path (everything else
under /run is hidden by its fresh /run), so `AptRepo.serve(host)` copies the repository
there; `publish` again after a new version and `serve` again.

    repo = AptRepo(tmp_path / "repo")
    repo.publish("hello-provisor", "1.0-1")
    await use_only(host, repo.serve(host))
    await ssh(host, "apt-get install -y hello-provisor")
"""

from __future__ import annotations

import gzip
import hashlib
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from provisor._asyncssh import asyncssh
from provisor.machines import SandboxHost

MAIN = "main"  # the suites of a repository: one flat repo each
SECURITY = "security"
_SUITES = {
    MAIN: {"Origin": "provisor-test", "Label": "provisor-test", "Suite": "stable"},
    # What Debian's security archive says of itself: how `patch analyze` tells updates apart.
    SECURITY: {"Origin": "Debian", "Label": "Debian-Security", "Suite": "stable-security"},
}
REPO_DIR = "apt-repo"  # its name in a host's directory


@dataclass
class AptRepo:
    """Two flat repositories (`main`, `security`) under `root`."""

    root: Path

    def __post_init__(self) -> None:
        for suite in _SUITES:
            (self.root / suite).mkdir(parents=True, exist_ok=True, mode=0o755)
        self.root.chmod(0o755)
        self._index()

    def publish(
        self,
        name: str,
        version: str,
        *,
        security: bool = False,
        files: dict[str, str] | None = None,
        depends: str | None = None,
    ) -> Path:
        """Build `name` `version` (installing `files`, default /usr/share/NAME/version
        holding the version) into the `security` or `main` suite and index it again."""
        suite = SECURITY if security else MAIN
        build = self.root / ".build" / f"{name}_{version}"
        shutil.rmtree(build, ignore_errors=True)
        (build / "DEBIAN").mkdir(parents=True)
        control = [
            f"Package: {name}",
            f"Version: {version}",
            "Architecture: all",
            "Maintainer: provisor tests <tests@provisor.invalid>",
            f"Description: {name}, a package built by provisor's tests",
        ]
        if depends:
            control.append(f"Depends: {depends}")
        (build / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        for path, content in (files or {f"/usr/share/{name}/version": f"{version}\n"}).items():
            target = build / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        deb = self.root / suite / f"{name}_{version}_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(build), str(deb)],
            check=True,
            capture_output=True,
        )
        deb.chmod(0o644)
        self._index()
        return deb

    def _index(self) -> None:
        for suite, fields in _SUITES.items():
            directory = self.root / suite
            packages = subprocess.run(
                ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
                cwd=directory,
                check=True,
                capture_output=True,
            ).stdout
            (directory / "Packages").write_bytes(packages)
            (directory / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
            (directory / "Release").write_text(_release(directory, fields))
            for made in ("Packages", "Packages.gz", "Release"):
                (directory / made).chmod(0o644)

    def sources(self, at: Path | None = None) -> str:
        """sources.list lines for the repositories (at `at`, default where they are built)."""
        where = at or self.root
        return "".join(f"deb [trusted=yes] file://{where / suite} ./\n" for suite in _SUITES)

    def serve(self, host: SandboxHost) -> str:
        """Copy the repositories into the host's directory (which the host sees at the
        same path); the sources.list lines that name them there."""
        at = host.directory / REPO_DIR
        shutil.copytree(self.root, at, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".build"))
        at.chmod(0o755)
        return self.sources(at)


async def ssh(host: SandboxHost, command: str, *, timeout: float = 120) -> str:
    """Run a command as the host's user; its stdout, or AssertionError with its output."""
    async with asyncssh.connect(
        host.address,
        port=host.port,
        username=host.user,
        client_keys=[str(host.client_key)],
        known_hosts=None,
    ) as connection:
        done = await connection.run(command, check=False, timeout=timeout)
    assert done.exit_status == 0, f"{host.name}: {command}: {done.stdout!r} {done.stderr!r}"
    return str(done.stdout)


async def use_only(host: SandboxHost, sources: str) -> None:
    """Point the host's apt at `sources` only (no other list, no network), and read them."""
    script = (
        "set -e; rm -rf /etc/apt/sources.list.d; mkdir -p /etc/apt/sources.list.d; "
        f"printf '%s' {shlex.quote(sources)} > /etc/apt/sources.list; "
        "rm -rf /var/lib/apt/lists/*; apt-get update -qq"
    )
    await ssh(host, script)


async def install(host: SandboxHost, *packages: str) -> None:
    names = " ".join(shlex.quote(p) for p in packages)
    await ssh(host, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {names}")


async def installed_version(host: SandboxHost, package: str) -> str | None:
    """The package's installed version on the host, None when it is not installed."""
    found = await ssh(
        host,
        f"dpkg-query -W -f='${{db:Status-Status}} ${{Version}}' {shlex.quote(package)} "
        "2>/dev/null || true",
    )
    status, _, version = found.partition(" ")
    return version if status == "installed" else None


def _release(directory: Path, fields: dict[str, str]) -> str:
    """A Release file with the hashes apt checks the indexes against."""
    lines = [f"{key}: {value}" for key, value in fields.items()]
    lines.append(f"Date: {formatdate(usegmt=True)}")
    lines.append("Architectures: all amd64 arm64")
    for title, algorithm in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{title}:")
        for name in ("Packages", "Packages.gz"):
            data = (directory / name).read_bytes()
            digest = hashlib.new(algorithm, data).hexdigest()
            lines.append(f" {digest} {len(data)} {name}")
    return "\n".join(lines) + "\n"
