"""provisor's files are its user's alone: the data directory 0700, every file 0600, from
the moment each exists, whatever the umask; older installs are tightened on first use."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisor import files
from provisor.core.errors import ProvisorError
from provisor_cli import open_to_others


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o277])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def test_made_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    home = files.private_dir(tmp_path / "a" / "home")
    files.private_file(home / "db")
    files.write_private(home / "out", b"x")
    with files.append_private(home / "log") as log:
        log.write(b"line\n")
    assert files.create_once(home / "key", b"first")
    os.close(files.open_private(home / "lock", os.O_RDWR))
    with files.file_lock(home / "migrate.lock"):
        pass
    assert mode(tmp_path / "a") == files.DIR_MODE  # a missing parent too
    assert open_to_others(home) == []


def test_create_once_keeps_the_first_and_never_shows_a_partial_file(tmp_path: Path) -> None:
    assert files.create_once(tmp_path / "key", b"first")
    assert not files.create_once(tmp_path / "key", b"second")
    assert (tmp_path / "key").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]  # no temporary left


def test_a_rewritten_file_is_read_whole_or_not_changed(tmp_path: Path) -> None:
    """A reader of a file provisor rewrites (the server's certificate, read by a client as
    the server starts again) sees the old contents or the new, never an empty file or a
    part; the file stays private, a link in its place is replaced, not followed, and no
    temporary is left."""
    path = tmp_path / "server_cert.pem"
    versions = [bytes([65 + n]) * 200_000 for n in range(4)]
    files.write_private(path, versions[0])
    seen: set[bytes] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(200):
            files.write_private(path, versions[round_ % len(versions)])
    finally:
        done.set()
        reader.join()
    assert seen <= set(versions), sorted(len(s) for s in seen - set(versions))
    assert mode(path) == files.FILE_MODE
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"kept")
    path.unlink()
    path.symlink_to(elsewhere)
    files.write_private(path, b"new")
    assert elsewhere.read_bytes() == b"kept" and not path.is_symlink()
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "server_cert.pem"]


def test_a_wider_file_is_tightened_when_used(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"old\n")
    (tmp_path / "log").chmod(0o644)
    with files.append_private(tmp_path / "log") as log:
        log.write(b"new\n")
    assert mode(tmp_path / "log") == files.FILE_MODE
    assert (tmp_path / "log").read_bytes() == b"old\nnew\n"
    files.keep_private(tmp_path / "gone-wal")  # missing: stays missing
    assert not (tmp_path / "gone-wal").exists()


def test_a_file_where_a_directory_belongs_is_named(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")
    with pytest.raises(ProvisorError, match=f"{tmp_path / 'home'} is a file"):
        files.private_dir(tmp_path / "home" / "jobs")


def cli(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PROVISOR_HOME": str(home)}
    env.pop("PROVISOR_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "provisor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_an_older_install_is_tightened_on_first_use(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = cli(home, "hosts", "add", "web01", "--address", "127.0.0.5")
    assert first.wait(60) == 0, first.communicate()
    # As an install from before left it: readable by everyone.
    (home / "jobs" / "7").mkdir(parents=True)
    (home / "jobs" / "7" / "web01.stdout").write_text("output\n")
    for path in [home, *home.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    listed = cli(home, "hosts", "list")
    stdout, stderr = listed.communicate(timeout=60)
    assert listed.returncode == 0, stderr
    assert "web01" in stdout
    assert open_to_others(home) == []


def test_processes_sharing_a_new_data_directory(tmp_path: Path) -> None:
    """Started together on a data directory that does not exist yet: each one succeeds
    (one creates the tables, the others wait for it), and nothing is ever wider."""
    for attempt in range(2):
        home = tmp_path / f"home{attempt}"
        started = [cli(home, "hosts", "list") for _ in range(4)]
        started.append(cli(home, "events"))
        for process in started:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr
        assert open_to_others(home) == []


KEYS = """
import sys
from pathlib import Path
from provisor.orchestrator import secrets
home = Path(sys.argv[1])
print(secrets.sealing_key(home).decode(), secrets.controller_public_key(home),
      secrets.parameter_certificate(home).splitlines()[1])
"""


def test_keys_made_by_processes_at_once_are_one_set(tmp_path: Path) -> None:
    """Every process sees the same keys, whole: the first made wins, atomically."""
    home = tmp_path / "home"
    started = [
        subprocess.Popen(
            [sys.executable, "-c", KEYS, str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    seen = set()
    for process in started:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        seen.add(stdout)
    assert len(seen) == 1
    assert open_to_others(home) == []
