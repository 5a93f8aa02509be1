"""`python -m provisor.testing`: list, stop, destroy and clean up sandbox hosts.

    python -m provisor.testing list [--base-dir DIR]
    python -m provisor.testing stop|destroy [--base-dir DIR] (--all | NAME...)
    python -m provisor.testing cleanup [DIR...]

`cleanup` destroys every host under the given base dirs (default: the base dirs of
pytest sessions that are gone), kills any process that still names such a dir (even
one whose directory was deleted by hand) and removes the dirs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from provisor.machines import destroy, is_running, list_hosts, procs, stop
from provisor.polling import poll_until

TEST_ROOT = Path("/run/provisor-test")
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


async def _main(args: argparse.Namespace) -> int:
    if args.command == "cleanup":
        # Without arguments only what crashed test sessions left: the default base dir
        # holds the hosts of the local provider, which must be named to be destroyed.
        dirs = [Path(d).absolute() for d in args.dirs] or _stale_test_dirs()
        return await _cleanup(dirs)
    hosts = list_hosts(args.base_dir)
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
    await asyncio.gather(*(stop(h, destroy=args.command == "destroy") for h in hosts))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provisor.testing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "stop", "destroy"):
        sub = commands.add_parser(name)
        sub.add_argument("--base-dir", type=Path, default=None)
        if name != "list":
            sub.add_argument("--all", action="store_true")
            sub.add_argument("names", nargs="*")
    cleanup = commands.add_parser("cleanup")
    cleanup.add_argument("dirs", nargs="*")
    args = parser.parse_args(argv)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
