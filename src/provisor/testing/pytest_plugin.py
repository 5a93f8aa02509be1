"""pytest plugin: the `testbed` fixture starts real SSH sandbox hosts for a test.

    def test_fleet(testbed):
        hosts = testbed(3)                      # started concurrently, ready for SSH
        hosts += testbed(1, isolation="process")

    async def test_async(testbed):
        hosts = await testbed.start(2)          # same, in the test's own event loop

Hosts get names tb01, tb02, ... and addresses from a /16 block of 127.0.0.0/8 that
this pytest session claims (a lock file plus a check for listeners already in it),
so concurrent sessions and leftovers from crashed ones never collide. At teardown
every host the test started is stopped and destroyed, and the fixture fails the
test if any process or mount of it is left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from provisor.testing.blocks import ROOT_TEST_DIR, claim_test_block

if TYPE_CHECKING:  # the machines package is imported only by tests that use the fixture
    from provisor.machines import Isolation, SandboxHost

T = TypeVar("T")

_PER_BLOCK = 250 * 256


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a fresh loop, even when called from a running one."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="testbed") as pool:
        return pool.submit(asyncio.run, coro).result()


class _Session:
    """What every test of one pytest session shares: a base dir and an address block."""

    def __init__(self) -> None:
        if os.geteuid() == 0:
            # Not under /tmp: namespace-mode hosts overlay /tmp (see check_namespace_base_dir).
            ROOT_TEST_DIR.mkdir(parents=True, exist_ok=True)
            self.base_dir = ROOT_TEST_DIR / secrets.token_hex(4)
            self.base_dir.mkdir(mode=0o755)
        else:
            self.base_dir = Path(tempfile.mkdtemp(prefix="provisor-test-"))
        # Lets `python -m provisor.testing cleanup` tell a live session from a crashed one.
        (self.base_dir / ".session-pid").write_text(f"{os.getpid()}\n")
        self.block, self._lock = claim_test_block()
        self._next = 0
        self._mutex = threading.Lock()

    def allocate(self, n: int) -> list[tuple[str, str]]:
        """(name, address) for n new hosts, unique within the session."""
        with self._mutex:
            if self._next + n > _PER_BLOCK:
                raise RuntimeError(f"testbed: more than {_PER_BLOCK} hosts in one session")
            first, self._next = self._next, self._next + n
        return [
            (f"tb{k + 1:02d}", f"127.{self.block}.{k // 250}.{k % 250 + 1}")
            for k in range(first, first + n)
        ]

    def close(self) -> None:
        from provisor import machines

        async def stop_all() -> None:
            hosts = machines.list_hosts(self.base_dir)
            await asyncio.gather(*(machines.destroy(h) for h in hosts), return_exceptions=True)

        try:
            _in_thread(stop_all())
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self._lock.close()


class Testbed:
    """The callable the `testbed` fixture returns."""

    __test__ = False  # a helper, not a test class, despite its name

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._names: list[str] = []
        self.hosts: list[SandboxHost] = []

    @property
    def base_dir(self) -> Path:
        return self._session.base_dir

    def __call__(
        self, n: int = 1, *, isolation: Isolation | None = None, password_login: bool = False
    ) -> list[SandboxHost]:
        """Start n hosts concurrently and return them once all answer SSH.

        `password_login`: their sshd also accepts passwords (namespace mode; root still
        logs in with keys only).
        """
        return _in_thread(self.start(n, isolation=isolation, password_login=password_login))

    async def start(
        self, n: int = 1, *, isolation: Isolation | None = None, password_login: bool = False
    ) -> list[SandboxHost]:
        from provisor import machines

        slots = self._session.allocate(n)
        self._names += [name for name, _ in slots]
        results = await asyncio.gather(
            *(
                machines.start(
                    name,
                    address,
                    base_dir=self.base_dir,
                    isolation=isolation,
                    password_login=password_login,
                )
                for name, address in slots
            ),
            return_exceptions=True,
        )
        hosts = [r for r in results if not isinstance(r, BaseException)]
        self.hosts += hosts
        for result in results:
            if isinstance(result, BaseException):
                raise result  # teardown still destroys the ones that did start
        return hosts

    def teardown(self) -> None:
        from provisor import machines
        from provisor.machines import procs

        async def destroy_all() -> list[BaseException]:
            hosts = [machines.load(name, self.base_dir) for name in self._names]
            results = await asyncio.gather(
                *(machines.destroy(h) for h in hosts if h is not None), return_exceptions=True
            )
            return [r for r in results if isinstance(r, BaseException)]

        errors = _in_thread(destroy_all())
        problems = [f"stop failed: {e!r}" for e in errors]
        # Only this testbed's hosts: a module-scoped testbed may share the base dir.
        directories = [self.base_dir / name for name in self._names]
        for directory in directories:
            for pid in procs.referring_to(directory):
                problems.append(f"process {pid} left behind: {procs.cmdline(pid)}")
        with contextlib.suppress(OSError):
            mounts = Path("/proc/self/mountinfo").read_text()
            problems += [
                f"mount left behind: {line}"
                for line in mounts.splitlines()
                if any(f"{d}/" in line for d in directories)
            ]
        if problems:
            pytest.fail("testbed teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def _provisor_testbed_session() -> Iterator[_Session]:
    session = _Session()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def testbed(_provisor_testbed_session: _Session) -> Iterator[Testbed]:
    """Start real SSH sandbox hosts: `hosts = testbed(n, isolation=None, password_login=False)`."""
    bed = Testbed(_provisor_testbed_session)
    yield bed
    bed.teardown()


@pytest.fixture(scope="module")
def module_testbed(_provisor_testbed_session: _Session) -> Iterator[Testbed]:
    """Like `testbed`, but the hosts live until the test module ends (for large fleets)."""
    bed = Testbed(_provisor_testbed_session)
    yield bed
    bed.teardown()
