"""Boot a contained namespace-mode host: its root is an unprivileged uid of this computer.

Run as ``python3 -I -S _contain.py boot <host dir>`` (or ``probe <dir>``) by real root;
standard library only, and every module is imported first, since the interpreter's own
files may be hidden once the host's filesystems are mounted (a /root overlay).

Process tree on the machine::

    _contain.py boot (the host's top process, SandboxHost.pid; real root, host namespaces)
      └─ _contain.py init (PID 1 of the host's user, mount, PID, UTS and IPC namespaces;
                            uid 0 inside is UID_BASE outside): accepts SSH connections on
                            the listening socket the top process bound, and starts
                            `sshd -i` for each; reaps orphans; exits when the top does.

Filesystems (see docs/testbed.md, "Containment"): first, as real root in a private mount
namespace, the computer's mounts are made read-only for the host, and idmapped views
(uid 0 on disk is UID_BASE, i.e. root inside) are made of /usr (software), of the host
directory (the overlays' upper dirs, so files root inside writes are owned by 0 on disk,
as before) and of loop-mounted volumes. Then, inside the new user namespace, the host's
root mounts its overlays and fresh /run, /proc, /dev/pts, /dev/shm, /dev/mqueue (its
fstab, one `mount -a`). The other overlaid directories show the computer's files owned by
nobody: what any user of the computer may read, and nothing it may write.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Config = dict[str, Any]  # contain.json, written by _containment.write_config

UID_BASE = 100000  # root of a contained host is this uid of the computer
UID_COUNT = 65536
CONFIG = "contain.json"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
# The mount API's syscall numbers are the same on every architecture Linux added them to.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
# Nothing of the launching process's environment (its secrets) reaches the host.
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
MAX_SESSIONS = 1000  # sshd processes at once; beyond, a connection is closed at once
MAX_FORWARDED = 256  # forwarded connections of one host at once; beyond, closed at once
FORWARD_CHUNK = 65536  # bytes read at a time by a forwarding thread
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
HOLDER_SOCKET = "holder.sock"  # in a network's directory (see `network_directory`)
HOLDER_LOCK = "holder.lock"


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount_setattr(
    fd: int, path: str, flags: int, attr_set: int, attr_clr: int, userns: int
) -> None:
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", attr_set, attr_clr, 0, userns))
    _check(
        _libc.syscall(SYS_MOUNT_SETATTR, fd, path.encode(), flags, attr, 32),
        f"mount_setattr {path or fd}",
    )


def _idmapped_view(source: str, target: str, userns: int, *, writable: bool = True) -> None:
    """Mount at `target` a view of `source` in which uid/gid N is UID_BASE + N."""
    fd = _check(
        _libc.syscall(
            SYS_OPEN_TREE, AT_FDCWD, source.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
        ),
        f"open_tree {source}",
    )
    try:
        read_only = 0 if writable else MOUNT_ATTR_RDONLY
        _mount_setattr(
            fd,
            "",
            AT_EMPTY_PATH,
            MOUNT_ATTR_IDMAP | read_only,
            MOUNT_ATTR_RDONLY - read_only,
            userns,
        )
        _check(
            _libc.syscall(
                SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH
            ),
            f"move_mount {target}",
        )
    finally:
        os.close(fd)


def _write_maps(pid: int) -> None:
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 {UID_BASE} {UID_COUNT}\n")


def _mapping_namespace() -> tuple[int, int]:
    """(fd of a user namespace with the hosts' mapping, pid holding it) for idmapped mounts."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        try:
            _unshare(CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(errno.EPERM, "cannot create a user namespace")
        _write_maps(pid)
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)  # the holder exits; the fd keeps its namespace
        os.waitpid(pid, 0)
    return fd, pid


def probe(directory: str) -> None:
    """Fail (OSError) unless this kernel lets a host be contained: user namespaces and
    idmapped mounts of `directory`'s filesystem, tried in a throwaway mount namespace."""
    userns, _ = _mapping_namespace()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _unshare(CLONE_NEWNS | CLONE_NEWNET)
            _loopback_up()
            _check(
                _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
                "mount --make-rprivate /",
            )
            _idmapped_view(directory, directory, userns)
            _unshare(CLONE_NEWUSER)
            code = 0
        except OSError as exc:
            print(f"containment probe: {exc}", file=sys.stderr)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(
            errno.EPERM, "the kernel refused a user or network namespace, or an idmapped mount"
        )


# --- the machines' network ------------------------------------------------------------------
#
# The contained hosts of one network (the `local` provider's loopback block) share one
# network namespace, held by a small process (`_contain.py network DIR`): in it only `lo`,
# so every 127.x address is local there and nothing of this computer's is. Each host's top
# process gets the namespace from the holder (its fd, over a Unix socket) and keeps the
# connection open; the holder exits when the last one closes.


def _loopback_up() -> None:
    """Bring `lo` of this process's network namespace up (127.0.0.0/8 and ::1 with it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = bytearray(struct.pack("16sh22x", b"lo", 0))
        fcntl.ioctl(s, SIOCGIFFLAGS, request)
        flags = struct.unpack_from("h", request, 16)[0] | IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags))


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def hold_network(directory: str) -> None:
    """The holder: a new network namespace, handed to every host that connects."""
    _unshare(CLONE_NEWNET)
    _loopback_up()
    namespace = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    path = os.path.join(directory, HOLDER_SOCKET)
    # A Unix socket's path is reached through the file system, whatever the network; it
    # gets its name once it listens, so a host never finds a socket that refuses it.
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}.new")
    server.bind(f"{path}.new")
    server.listen(64)
    os.replace(f"{path}.new", path)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    clients = 0
    lock = os.open(os.path.join(directory, HOLDER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    while True:
        for key, _ in selector.select():
            if key.fileobj is server:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    conn, _ = server.accept()
                    socket.send_fds(conn, [b"n"], [namespace])
                    selector.register(conn, selectors.EVENT_READ)
                    clients += 1
            else:  # a host's top process ended (or wrote, which it never does)
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                clients -= 1
        if clients == 0:
            # Under the lock a host takes to connect: one that connected meanwhile is
            # in the backlog (served above on the next round); else nobody can come.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                os.unlink(path)
                return
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
            socket.send_fds(conn, [b"n"], [namespace])
            selector.register(conn, selectors.EVENT_READ)
            clients += 1


def _join_network(directory: str) -> tuple[int, socket.socket]:
    """(fd of the network's namespace, the connection to its holder, kept open while this
    host runs); starts the holder when none runs."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(directory, HOLDER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            path = os.path.join(directory, HOLDER_SOCKET)
            try:
                conn.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                _start_holder(directory)
                conn.connect(path)
        finally:
            os.close(lock)  # before the holder answers: it takes the lock to exit
        conn.settimeout(10.0)
        _, fds, _, _ = socket.recv_fds(conn, 1, 1)
        if not fds:
            raise OSError(errno.EPROTO, f"the network holder of {directory} sent no namespace")
        return fds[0], conn
    except BaseException:
        conn.close()
        raise


def _start_holder(directory: str) -> None:
    """Start the holder, nobody's child here (a host's top process waits for all of its
    children), and wait for its socket."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.chdir("/")  # not the host directory: its stop kills what refers to it
                argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), "network", directory]
                os.execve(argv[0], argv, _ENV)  # noqa: S606 - this very script
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    path = os.path.join(directory, HOLDER_SOCKET)
    deadline = time.monotonic() + 10.0
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, f"the network holder of {directory} did not start")
        time.sleep(0.005)


def _stage_one(config: Config, userns: int) -> None:
    """As real root, in the host's own (new) mount namespace: everything user namespaces
    cannot do (loop mounts, idmapped views, read-only computer)."""
    _unshare(CLONE_NEWNS)
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    if config.get("cgroup"):
        with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as f:
            f.write("0\n")
    # Nothing of the computer is writable for the host but what it mounts itself (/proc
    # stays as it is: a new proc may be mounted only where the old one is fully visible).
    _mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0, 0)
    _mount_setattr(AT_FDCWD, "/proc", 0, 0, MOUNT_ATTR_RDONLY, 0)
    for device, (_, target) in zip(config["loop_devices"], config["loops"], strict=True):
        # Attached by the top process (see `_attach_loop`), mounted where the views are made.
        subprocess.run(["mount", "-n", "-t", "ext4", device, target], check=True, env=_ENV)
    for source, target, writable in config["views"]:
        _idmapped_view(source, target, userns, writable=writable)


def _attach_loop(image: str) -> tuple[str, list[int]]:
    """A loop device for an ext4 image, detached by the kernel once nothing uses it.

    Attached here, in the computer's mount namespace: the host's makes the computer's
    file systems read-only (an image opened there would be a read-only device), and
    /sys/block/loop*/loop/backing_file names the image as the computer sees it.
    """
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        info = bytearray(232)  # struct loop_info64
        struct.pack_into("I", info, 52, LO_FLAGS_AUTOCLEAR)
        name = image.encode()[:63]
        info[56 : 56 + len(name)] = name
        config = struct.pack("II", backing, 0) + bytes(info) + bytes(64)  # struct loop_config
        for _ in range(64):  # another process may take the free device first
            device = f"/dev/loop{fcntl.ioctl(control, LOOP_CTL_GET_FREE)}"
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.EBUSY:
                    continue
                raise
            return device, [fd, backing]
        raise OSError(errno.EBUSY, f"no free loop device for {image}")
    except BaseException:
        os.close(backing)
        raise
    finally:
        os.close(control)


def _enter_user_namespace(flags: int, map_writer: Callable[[int], None]) -> None:
    """unshare(CLONE_NEWUSER | flags), have `map_writer` map this process, become root."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    me = os.getpid()
    helper = os.fork()
    if helper == 0:  # stays outside, where it may write the maps
        os.close(ready_w)
        os.close(go_r)
        code = 1
        try:
            if os.read(ready_r, 1) == b"1":
                map_writer(me)
                os.write(go_w, b"1")
                code = 0
        except OSError as exc:
            print(f"provisor: cannot map the user namespace: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    os.close(ready_r)
    os.close(go_w)
    try:
        _unshare(CLONE_NEWUSER | flags)
        os.write(ready_w, b"1")
        if os.read(go_r, 1) != b"1":
            raise OSError(errno.EPERM, "the user namespace could not be mapped")
    finally:
        os.close(ready_w)
        os.close(go_r)
        os.waitpid(helper, 0)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.setgroups([])
    # The uid change made this process undumpable: its /proc files would belong to the
    # machine's root, and a helper in this namespace could not map the next one.
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def _identity_maps(pid: int) -> None:
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 0 {UID_COUNT}\n")


def _spawn(argv: list[str], *, stdio: int, stderr: int, stdin: int | None = None) -> int:
    """Start a program in a session of its own; PID 1 reaps it (no Popen bookkeeping)."""
    actions = [
        (os.POSIX_SPAWN_DUP2, stdio if stdin is None else stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdio, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawn(argv[0], argv, _ENV, file_actions=actions, setsid=True)


def _sessions(config: Config, listeners: list[socket.socket], lifeline: int, log_fd: int) -> None:
    """PID 1 of the host: an `sshd -i` per connection; reaps everything; ends with the top."""
    selector = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for listener in listeners:
        selector.register(listener, selectors.EVENT_READ)
    selector.register(lifeline, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    sshd = [config["sshd"], "-i", "-e", "-f", config["sshd_config"]]
    running: set[int] = set()
    while True:
        for key, _ in selector.select():
            if key.fileobj in listeners:
                assert isinstance(key.fileobj, socket.socket)
                with contextlib.suppress(BlockingIOError, InterruptedError, ConnectionAbortedError):
                    conn, _ = key.fileobj.accept()
                    with conn:
                        if len(running) < MAX_SESSIONS:
                            running.add(_spawn(sshd, stdio=conn.fileno(), stderr=log_fd))
            elif key.fileobj == lifeline:
                return  # the top process is gone: so is this host
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
        while True:  # reap every child and orphan
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            running.discard(pid)


def _init(
    config: Config, listeners: list[socket.socket], lifeline: int, console: int, log_fd: int
) -> None:
    """PID 1 of the host, as its root: /proc, its hostname, its init script, sessions."""
    for source, target, kind, flags in (
        (b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC),
        (b"mqueue", b"/dev/mqueue", b"mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC),
    ):
        if os.path.isdir(target):
            _check(_libc.mount(source, target, kind, flags, None), f"mount {target.decode()}")
    name = config["hostname"].encode()
    _check(_libc.sethostname(name, len(name)), "sethostname")
    init = config.get("init_script")
    if init:
        # Detached, in the background once the filesystems are mounted; reaped by PID 1.
        with open(os.devnull, "rb") as null:
            _spawn(
                ["/bin/sh", init, config["directory"]],
                stdio=console,
                stderr=console,
                stdin=null.fileno(),
            )
    os.close(console)
    _sessions(config, listeners, lifeline, log_fd)


def _mounts(config: Config) -> None:
    """The host's own mounts (its fstab), made by its root in its first user namespace."""
    # The fresh /run may hide the host directory: the cwd keeps a handle on its view
    # (see the fstab).
    os.chdir(config["disk_view"])
    subprocess.run(
        ["mount", "--no-canonicalize", "-a", "-T", config["fstab"]], check=True, env=_ENV
    )
    os.chdir("/")


def _relay(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes from `source` to `target` until `source` ends; then end `target`'s way."""
    with contextlib.suppress(OSError):
        while data := source.recv(FORWARD_CHUNK):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _connection(
    client: socket.socket,
    outgoing: socket.socket,
    target: tuple[str, int],
    slots: threading.BoundedSemaphore,
) -> None:
    """One forwarded connection: connect `outgoing` to `target`, relay both ways."""
    try:
        with client, outgoing:
            outgoing.settimeout(10.0)
            try:
                outgoing.connect(target)
            except OSError:
                return  # closed: the client sees the refusal as a reset
            outgoing.settimeout(None)
            back = threading.Thread(target=_relay, args=(outgoing, client), daemon=True)
            back.start()
            _relay(client, outgoing)
            back.join()
    finally:
        slots.release()


def _forward(routes: list[tuple[socket.socket, int, tuple[str, int]]], home: int) -> int:
    """The top process of a host with a network of its own, until the host's PID 1 ends:
    each route (a listening socket, the network namespace to connect in, where to) is
    forwarded, a thread per direction of each connection."""
    selector = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector.register(wake_r, selectors.EVENT_READ)
    for listener, namespace, target in routes:
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, (namespace, target))
    slots = threading.BoundedSemaphore(MAX_FORWARDED)
    while True:
        while True:  # reap: the host is over when no child is left
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid == 0:
                break
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                continue
            server = key.fileobj
            assert isinstance(server, socket.socket)
            try:
                client, _ = server.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            if not slots.acquire(blocking=False):
                client.close()
                continue
            namespace, target = key.data
            client.setblocking(True)
            _setns(namespace)  # a socket belongs to the network it was made in
            try:
                outgoing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _setns(home)
            threading.Thread(
                target=_connection, args=(client, outgoing, target, slots), daemon=True
            ).start()


def _listen(address: str, port: int, *, shared: bool = False) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:  # every host of the network relays the endpoint, root's sockets only
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind((address, port))
        listener.listen(1024)
    except BaseException:
        listener.close()
        raise
    return listener


def _routes(
    config: Config, network: int, home: int
) -> list[tuple[socket.socket, int, tuple[str, int]]]:
    """The host's published ports (listening here, on its address, connecting inside its
    network) and the relays of controller endpoints (listening inside, connecting here)."""
    routes = []
    address = config["address"]
    try:
        for port in config.get("publish") or ():
            try:
                routes.append((_listen(address, port), network, (address, port)))
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot publish {address}:{port}: {exc.strerror}"
                ) from None
        _setns(network)
        try:
            for host, port in config.get("relays") or ():
                try:
                    routes.append((_listen(host, port, shared=True), home, (host, port)))
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"cannot relay {host}:{port} into the machines' network "
                        f"(taken there by another machine?): {exc.strerror}",
                    ) from None
        finally:
            _setns(home)
    except BaseException:
        for listener, _, _ in routes:
            listener.close()
        raise
    return routes


def _log(fd: int, message: str) -> None:
    os.write(fd, f"provisor: {message}\n".encode())


def boot(directory: str) -> int:
    """The host's top process: bind its SSH port, make its namespaces, wait for its end.

    Two user namespaces: in the first (root = UID_BASE) the host's root mounts its
    overlays and filesystems; the second (the same ids) is where it runs, with its own
    mount, PID, UTS and IPC namespaces. Mounts made in the first are locked in the
    second: nothing there can unmount them to reach the writable views under them.
    """
    with open(os.path.join(directory, CONFIG)) as f:
        config = json.load(f)
    log_fd = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    console = os.open(config["console"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((config["address"], config["port"]))
        listener.listen(1024)
    except OSError as exc:
        _log(log_fd, f"cannot listen on {config['address']}:{config['port']}: {exc.strerror}")
        return 1
    listener.setblocking(False)
    listeners = [listener]  # SSH: here, and inside the host's network (from its peers)
    network = home = -1
    holder: socket.socket | None = None
    routes: list[tuple[socket.socket, int, tuple[str, int]]] = []
    if config.get("network"):
        home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The connection to the holder stays open (unused) as long as this process.
            network, holder = _join_network(config["network"])
            routes = _routes(config, network, home)
            _setns(network)
            try:
                listeners.append(_listen(config["address"], config["port"]))
            finally:
                _setns(home)
            listeners[-1].setblocking(False)
        except OSError as exc:
            _log(log_fd, f"cannot join the machines' network: {exc}")
            return 1
    held: list[int] = []  # the loop devices stay attached while these are open
    config["loop_devices"] = []
    for image, _ in config["loops"]:
        device, fds = _attach_loop(image)
        config["loop_devices"].append(device)
        held += fds
    userns, _ = _mapping_namespace()
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    lifeline_r, lifeline_w = os.pipe()  # EOF inside when this process is gone
    pid = os.fork()
    if pid == 0:  # makes the namespaces and the host's PID 1, then leaves
        code = 1
        try:
            os.close(lifeline_w)
            if network >= 0:  # as the computer's root: the host's root cannot
                _setns(network)
                for fd in (network, home):
                    os.close(fd)
                for route in routes:
                    route[0].close()
                if holder is not None:
                    holder.close()
            _stage_one(config, userns)
            os.close(userns)
            _enter_user_namespace(CLONE_NEWNS, _write_maps)
            _mounts(config)
            flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC
            _enter_user_namespace(flags, _identity_maps)
            if os.fork() == 0:
                try:
                    _init(config, listeners, lifeline_r, console, log_fd)
                    os._exit(0)
                except BaseException as exc:
                    _log(log_fd, f"host init failed: {exc!r}")
                    os._exit(1)
            code = 0
        except BaseException as exc:
            _log(log_fd, f"host boot failed: {exc!r}")
        os._exit(code)
    os.close(lifeline_r)
    os.close(userns)
    for each in listeners:
        each.close()
    os.close(console)
    _, status = os.waitpid(pid, 0)
    for fd in held:  # mounted by now (or never: then the devices go)
        os.close(fd)
    if os.waitstatus_to_exitcode(status) != 0:
        return 1
    if network >= 0:
        return _forward(routes, home)
    # The host's PID 1 is now this process's child (a subreaper): wait for it to end.
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("boot", "probe", "network"):
        print(f"usage: {argv[0]} boot|probe|network DIRECTORY", file=sys.stderr)
        return 2
    if argv[1] == "network":
        hold_network(argv[2])
        return 0
    if argv[1] == "probe":
        try:
            probe(argv[2])
        except OSError as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.tzset()
    return boot(argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
