"""`python -m provisor.testing`: start, list, stop, destroy and clean up sandbox hosts.

    python -m provisor.testing start N [--base-dir DIR] [--inventory FILE] [--password-login]
    python -m provisor.testing list [--base-dir DIR]
    python -m provisor.testing stop|destroy [--base-dir DIR] (--all | NAME...)
    python -m provisor.testing cleanup [DIR...]

`start` boots N more hosts (tb01, tb02, ... after those already there) on a free
127.X.0.0/16 block and can write them as an Ansible inventory for `provisor hosts
import FILE`; they run until `stop` or `destroy`.

`cleanup` destroys every host under the given base dirs (default: the base dirs of
pytest sessions that are gone), kills any process that still names such a dir (even
one whose directory was deleted by hand) and removes the dirs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from provisor.core.nodeset import fold, natural_key
from provisor.machines import SandboxHost, destroy, is_running, list_hosts, procs, start, stop
from provisor.polling import poll_until
from provisor.testing.blocks import ROOT_TEST_DIR, claim_test_block

TEST_ROOT = ROOT_TEST_DIR
SESSION_PID = ".session-pid"  # written by the pytest plugin into its base dir


def _stale_test_dirs() -> list[Path]:
    """Base dirs of pytest sessions (see pytest_plugin) whose process is gone."""
    candidates = sorted(TEST_ROOT.glob("*")) if TEST_ROOT.is_dir() else []
    candidates += sorted(Path(tempfile.gettempdir()).glob("provisor-test-*"))
    stale = []
    for entry in candidates:
        if not entry.is_dir() or entry.name.startswith((".", "provisor-test-blocks")):
            continue
        try:
            owner = int((entry / SESSION_PID).read_text())
        except (OSError, ValueError):
            owner = 0
        if not procs.is_alive(owner):
            stale.append(entry)
    return stale


def _gone(base: Path) -> Callable[[], bool]:
    return lambda: not procs.referring_to(base)


async def _cleanup(base_dirs: list[Path]) -> int:
    for base in base_dirs:
        hosts = list_hosts(base)
        await asyncio.gather(*(destroy(h) for h in hosts))
        leftovers = procs.referring_to(base)
        for pid in leftovers:
            procs.kill(pid)
        if leftovers:
            await poll_until(_gone(base), timeout=5.0)
        if base.exists():
            shutil.rmtree(base, ignore_errors=True)
        print(f"{base}: destroyed {len(hosts)} host(s), killed {len(leftovers)} stray process(es)")
    return 0


_STARTING_AT_ONCE = 32


async def _start(args: argparse.Namespace) -> int:
    existing = list_hosts(args.base_dir)
    numbers = [int(h.name[2:]) for h in existing if h.name[:2] == "tb" and h.name[2:].isdigit()]
    first = max(numbers, default=0) + 1
    blocks = {int(h.address.split(".")[1]) for h in existing}
    if len(blocks) == 1:
        block, lock = blocks.pop(), None
    else:  # held while the hosts start: then they listen, and others see the block busy
        block, lock = claim_test_block()
    slots = asyncio.Semaphore(_STARTING_AT_ONCE)

    async def one(k: int) -> SandboxHost:
        async with slots:
            address = f"127.{block}.{(k - 1) // 250}.{(k - 1) % 250 + 1}"
            return await start(
                f"tb{k:02d}", address, base_dir=args.base_dir, password_login=args.password_login
            )

    try:
        hosts = await asyncio.gather(*(one(k) for k in range(first, first + args.count)))
    finally:
        if lock is not None:
            lock.close()
    for h in hosts:
        print(f"{h.name}\t{h.user}@{h.address}:{h.port}\t{h.isolation}")
    if hosts:
        print(f"{len(hosts)} host(s) started; they log in with the key {hosts[0].client_key}")
    if args.inventory is not None:
        lines = ["[testbed]"] + [
            f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
            f"ansible_ssh_private_key_file={h.client_key}"
            for h in [*existing, *hosts]
        ]
        args.inventory.write_text("\n".join(lines) + "\n")
        print(f"inventory: {args.inventory} (provisor hosts import {args.inventory})")
    return 0


async def _main(args: argparse.Namespace) -> int:
    if args.command == "cleanup":
        # Without arguments only what crashed test sessions left: the default base dir
        # holds the hosts of the local provider, which must be named to be destroyed.
        dirs = [Path(d).absolute() for d in args.dirs] or _stale_test_dirs()
        return await _cleanup(dirs)
    if args.command == "start":
        return await _start(args)
    hosts = sorted(list_hosts(args.base_dir), key=lambda h: natural_key(h.name))  # tb2 < tb10
    if args.command == "list":
        for h in hosts:
            state = "running" if is_running(h) else "stopped"
            print(f"{h.name}\t{h.address}:{h.port}\t{h.isolation}\t{state}\tpid {h.pid}")
        return 0
    if not args.all:
        wanted = set(args.names)
        missing = wanted - {h.name for h in hosts}
        if missing:
            print(f"no such host: {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
        hosts = [h for h in hosts if h.name in wanted]
    if not hosts:
        print("no hosts to " + args.command, file=sys.stderr)
        return 0
    await asyncio.gather(*(stop(h, destroy=args.command == "destroy") for h in hosts))
    done = "destroyed" if args.command == "destroy" else "stopped"
    print(f"{done} {len(hosts)} host(s): {fold(h.name for h in hosts)}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line, as `main` reads it (the docs test parses documented lines with it)."""
    line = argparse.ArgumentParser(
        prog="python -m provisor.testing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the usage lines as written
    )
    commands = line.add_subparsers(dest="command", required=True)
    started = commands.add_parser("start", help="boot N more hosts")
    started.add_argument("count", type=int, metavar="N")
    started.add_argument("--base-dir", type=Path, default=None)
    started.add_argument("--inventory", type=Path, help="write every host as an Ansible inventory")
    started.add_argument(
        "--password-login", action="store_true", help="sshd also takes users' passwords"
    )
    for name in ("list", "stop", "destroy"):
        sub = commands.add_parser(name)
        sub.add_argument("--base-dir", type=Path, default=None)
        if name != "list":
            sub.add_argument("--all", action="store_true")
            sub.add_argument("names", nargs="*")
    cleanup = commands.add_parser("cleanup")
    cleanup.add_argument("dirs", nargs="*")
    return line


def main(argv: list[str] | None = None) -> int:
    command_line = parser()
    args = command_line.parse_args(argv)
    if args.command == "start" and not 0 < args.count <= 10_000:
        command_line.error("N: give 1 to 10000 hosts")
    try:
        return asyncio.run(_main(args))
    except BrokenPipeError:  # `list | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
