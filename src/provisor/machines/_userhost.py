"""Process mode: one sandbox host, an asyncssh server running as the current user.

Run detached by `provisor.machines` as::

    python -m provisor.machines._userhost --dir DIR --name NAME --address A --port P --user U

Sessions run `/bin/sh -c COMMAND` (or a shell) in DIR/root with HOSTNAME=NAME; SFTP
is chrooted to DIR/root. SIGTERM stops the host and every process it started;
SIGHUP reloads the host key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import pty
import signal
import struct
import sys
import termios
import time
from collections.abc import Mapping
from pathlib import Path

from provisor._asyncssh import asyncssh
from provisor.polling import poll_until_sync

from ._host import USERHOST_ENV_MARKER, USERHOST_PID_FILE
from ._keys import HOST_KEY
from .procs import descendants

_PR_SET_CHILD_SUBREAPER = 36


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} userhost[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def _become_subreaper() -> None:
    """Adopt orphans (`nohup cmd &`), so stop can find and kill them and they get reaped."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class _Reaper:
    """The only caller of waitpid here: it reaps sessions and adopted orphans alike."""

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[int]] = {}

    def watch(self, pid: int) -> asyncio.Future[int]:
        # Called right after spawning, in the same loop callback as reap(): the child's
        # exit cannot be collected before it is registered.
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[pid] = future
        return future

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            future = self._waiters.pop(pid, None)
            if future is not None and not future.done():
                future.set_result(os.waitstatus_to_exitcode(status))


class _Server(asyncssh.SSHServer):
    def __init__(self, user: str, authorized_keys: Path) -> None:
        self._user = user
        self._authorized_keys = authorized_keys
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        # Re-read on every login, as sshd does: tests remove the key to get a rejection.
        text = ""
        if username == self._user:
            with contextlib.suppress(OSError):
                text = self._authorized_keys.read_text()
        assert self._conn is not None
        self._conn.set_authorized_keys(asyncssh.import_authorized_keys(text))
        return True

    def password_auth_supported(self) -> bool:
        return False


class _SFTPServer(asyncssh.SFTPServer):
    def exit(self) -> None:
        # Report success as sshd does when sftp-server exits: OpenSSH's scp (SFTP mode)
        # fails a copy whose session closed without an exit status.
        with contextlib.suppress(OSError, asyncssh.Error):
            self.channel.exit(0)


class _Host:
    def __init__(self, args: argparse.Namespace) -> None:
        self.directory = Path(args.dir)
        self.root = self.directory / "root"
        self.name: str = args.name
        self.address: str = args.address
        self.port: int = args.port
        self.user: str = args.user
        self.reaper = _Reaper()
        self.acceptor: asyncssh.SSHAcceptor | None = None
        self.done = asyncio.Event()
        self.env = {
            # bin/ holds a `hostname` that answers the host's name, as in namespace mode.
            "PATH": f"{self.directory / 'bin'}:"
            + os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.root),
            "USER": self.user,
            "LOGNAME": self.user,
            "SHELL": "/bin/sh",
            "HOSTNAME": self.name,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            USERHOST_ENV_MARKER: str(self.directory),
        }

    # --- sessions ------------------------------------------------------------------------

    def _spawn(self, argv: list[str], env: Mapping[str, str], fds: tuple[int, int, int]) -> int:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        # Own session per SSH session: signals and hangups go to its whole process group.
        return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)

    async def session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        if process.subsystem is not None:
            process.stderr.write(f"subsystem {process.subsystem} not supported\n".encode())
            process.exit(1)
            return
        env = dict(self.env)
        env.update({str(k): str(v) for k, v in process.env.items()})
        term = process.get_terminal_type()
        if process.command is not None:
            argv = ["/bin/sh", "-c", process.command]
        else:
            argv = ["/bin/sh", "-i"] if term else ["/bin/sh"]
        if term:
            env["TERM"] = term
            code = await self._run_pty(process, argv, env)
        else:
            code = await self._run_pipes(process, argv, env)
        if code < 0:
            try:
                name = signal.Signals(-code).name.removeprefix("SIG")
            except ValueError:  # a real-time signal has no name: report it as a status
                process.exit(128 - code)
            else:
                process.exit_with_signal(name)
        else:
            process.exit(code)

    async def _run_pipes(
        self, process: asyncssh.SSHServerProcess[bytes], argv: list[str], env: dict[str, str]
    ) -> int:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = self._spawn(argv, env, (in_r, out_w, err_w))
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        exited = self.reaper.watch(pid)
        await process.redirect(stdin=os.fdopen(in_w, "wb", buffering=0))
        # Like sshd: the session ends when the command has exited *and* its output is
        # drained (EOF on both pipes), so no trailing output is lost.
        await asyncio.gather(_pump(out_r, process.stdout), _pump(err_r, process.stderr))
        return await exited

    async def _run_pty(
        self, process: asyncssh.SSHServerProcess[bytes], argv: list[str], env: dict[str, str]
    ) -> int:
        master, slave = pty.openpty()
        cols, rows, width, height = process.get_terminal_size()
        with contextlib.suppress(OSError):
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, width, height))
        try:
            pid = self._spawn(argv, env, (slave, slave, slave))
        finally:
            os.close(slave)
        exited = self.reaper.watch(pid)
        await process.redirect(stdin=os.fdopen(os.dup(master), "wb", buffering=0))

        async def hang_up() -> None:
            await process.wait_closed()
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGHUP)

        watcher = asyncio.create_task(hang_up())
        try:
            await _pump(master, process.stdout)
            return await exited
        finally:
            watcher.cancel()

    # --- life cycle ----------------------------------------------------------------------

    def _sftp(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return _SFTPServer(chan, chroot=os.fsencode(self.root))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self.reaper.reap)
        loop.add_signal_handler(signal.SIGTERM, self.done.set)
        loop.add_signal_handler(signal.SIGINT, self.done.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_host_key)
        self.acceptor = await asyncssh.listen(
            self.address,
            self.port,
            backlog=1024,
            reuse_address=True,
            server_factory=lambda: _Server(self.user, self.root / ".ssh" / "authorized_keys"),
            server_host_keys=[str(self.directory / HOST_KEY)],
            process_factory=self.session,
            sftp_factory=self._sftp,
            allow_scp=True,
            encoding=None,
            line_editor=False,
            keepalive_interval=0,
        )
        (self.directory / USERHOST_PID_FILE).write_text(f"{os.getpid()}\n")
        _log(f"{self.name} listening on {self.address} port {self.port}")
        await self.done.wait()
        _log("stopping")
        self.acceptor.close()
        self.kill_everything()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / USERHOST_PID_FILE).unlink()

    def reload_host_key(self) -> None:
        assert self.acceptor is not None
        self.acceptor.update(server_host_keys=[str(self.directory / HOST_KEY)])
        _log("host key reloaded")

    def kill_everything(self) -> None:
        """Kill every process this host started, reaping them (we are their subreaper)."""

        def none_left() -> bool:
            self.reaper.reap()
            found = descendants(os.getpid())
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return not found

        poll_until_sync(none_left, timeout=5.0, first=0.01, factor=1.0)


async def _pump(fd: int, target: asyncssh.SSHWriter[bytes]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        while True:
            try:
                data = await reader.read(65536)
            except OSError:  # EIO from a pty master once the terminal is gone
                break
            if not data:
                break
            target.write(data)
            await target.drain()
    except (OSError, asyncssh.Error):
        pass  # the client went away; closing our end gives the command SIGPIPE
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="provisor.machines._userhost")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    args = parser.parse_args(argv)
    _become_subreaper()
    os.chdir(Path(args.dir) / "root")
    asyncio.run(_Host(args).serve())


if __name__ == "__main__":
    main()
