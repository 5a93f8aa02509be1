"""Namespace mode: a real OpenSSH sshd in its own UTS, PID and mount namespaces.

Process tree on the machine::

    unshare (the host's top process, SandboxHost.pid)
      └─ sshd -D  (PID 1 inside: it reaps orphans, and when it dies the kernel
                   kills everything else in the namespace; the overlay mounts
                   exist only in its mount namespace and go away with it)
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import stat
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from provisor.core.errors import ProvisorError
from provisor.polling import poll_until

from . import _containment, procs
from ._host import (
    CONSOLE_LOG,
    INIT_SCRIPT,
    OVERLAID_DIRS,
    BootOptions,
    Mount,
    SandboxHost,
    log_tail,
    write_state,
)
from ._keys import HOST_KEY, client_key, new_host_key

SSHD = "/usr/sbin/sshd"
LOG = "sshd.log"
BOOT = "boot.sh"
CONFIG = "sshd_config"
FSTAB = "fstab"
FRESH_LOWER = "lower"  # empty lower dirs for overlays that must not show the machine's

# Runs as PID 1 of the new namespaces (started by `unshare --fork`), then becomes sshd.
# All mounts come from the host's fstab in one `mount -a`: an exec per mount would
# dominate the boot time when fifty hosts start at once.
_BOOT_SCRIPT = """\
#!/bin/sh
# provisor sandbox host boot (namespace mode); arguments: host directory, hostname.
set -eu
dir="$1"
name="$2"
{cgroup}printf '%s' "$name" > /proc/sys/kernel/hostname
# The fresh /run hides the host directory when it lives under /run, yet sshd re-reads
# its config and host key on every connection. The working directory keeps a handle on
# it, and the fstab's last entries bind it back at the same path ("." is not
# canonicalized, so the kernel resolves it against that handle).
cd "$dir"
mount --no-canonicalize -a -T "$dir/{fstab}"
cd /
{init}exec {sshd} -D -e -f "$dir/{config}"
"""

# Joins the host's cgroup first, so that every process of the host is accounted there.
_BOOT_CGROUP = """\
echo 0 > '{cgroup}/cgroup.procs'
"""

# The init script runs in the background, detached, once the filesystems are mounted;
# sshd (PID 1 after the exec) reaps it like any orphan, and a reboot kills it.
_BOOT_INIT = """\
setsid /bin/sh "$dir/{init}" "$dir" < /dev/null >> "$dir/{console}" 2>&1 &
"""

_SSHD_CONFIG = """\
# provisor sandbox host {name}
ListenAddress {address}:{port}
HostKey {directory}/{host_key}
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication {password_authentication}
KbdInteractiveAuthentication no
UsePAM no
# Fleet tests open hundreds of connections and sessions at once.
MaxStartups 1000
MaxSessions 1000
LoginGraceTime 60
UseDNS no
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel INFO
{extra}"""


@functools.cache
def _sshd_has_option(option: str) -> bool:
    """Whether the installed sshd knows a config keyword (its parser table is in the binary)."""
    try:
        return option.lower().encode() in Path(SSHD).read_bytes()
    except OSError:
        return False


def _require_tools() -> str:
    if os.geteuid() != 0:
        raise ProvisorError(
            "namespace-mode sandbox hosts need root (mount and PID namespaces, overlayfs); "
            'use isolation="process" to run without root'
        )
    if not os.access(SSHD, os.X_OK):
        raise ProvisorError(
            f"{SSHD} not found: namespace-mode sandbox hosts run Debian's OpenSSH server; "
            "install it with: apt-get install -y openssh-server"
        )
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ProvisorError("unshare not found: install util-linux (apt-get install util-linux)")
    return unshare


def _prepare_disk(
    directory: Path, hostname: str, address: str, client_public: str, keys: Sequence[str]
) -> None:
    """Create the host's copy-on-write layers and the files that make it this host.

    Files already in the upper dirs (a disk restored from an archive) are kept, except
    those that make it this host: its hostname, its /etc/hosts line and root's keys.
    """
    for lower in OVERLAID_DIRS:
        if not os.path.isdir(lower):
            continue
        st = os.stat(lower)
        upper = directory / "upper" / lower.lstrip("/")
        upper.mkdir(parents=True, exist_ok=True)
        # A merged directory shows its upper dir's owner and mode (/tmp must stay 1777,
        # /root 0700 or sshd's StrictModes refuses the keys).
        os.chown(upper, st.st_uid, st.st_gid)
        os.chmod(upper, st.st_mode & 0o7777)
        (directory / "work" / lower.lstrip("/")).mkdir(parents=True, exist_ok=True)
    etc = directory / "upper" / "etc"
    _write_anew(etc / "hostname", (hostname + "\n").encode())
    try:
        hosts = Path("/etc/hosts").read_text()
    except OSError:
        hosts = "127.0.0.1\tlocalhost\n"
    short = hostname.split(".")[0]
    names = hostname if short == hostname else f"{hostname}\t{short}"
    _write_anew(etc / "hosts", (hosts.rstrip("\n") + f"\n{address}\t{names}\n").encode())
    _own_host_keys(directory)
    _fresh_root_home(directory)
    ssh_dir = _directory_anew(directory / "upper" / "root" / ".ssh", 0o700)
    lines = [client_public + " provisor-sandbox-client", *(k.strip() for k in keys)]
    _write_anew(ssh_dir / "authorized_keys", ("\n".join(lines) + "\n").encode(), 0o600)


# A disk restored from a snapshot holds what the machine's root left there, symbolic
# links to this computer's files included: what this computer's root writes into it at
# first boot replaces such entries and never goes through them.
def _write_anew(path: Path, data: bytes, mode: int = 0o644) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _directory_anew(path: Path, mode: int) -> Path:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    path.mkdir(mode=mode, exist_ok=True)
    return path


def _own_host_keys(directory: Path) -> None:
    """Give the host's /etc/ssh its own host key, as a server's has, not the machine's.

    The machine's host keys are hidden (overlayfs whiteouts): its private keys are not
    the host's to read. The host's key pair is linked from its directory, which is bound
    at the same path inside it, so a rekey shows there at once: what a program on the
    host reads in /etc/ssh/ssh_host_*_key.pub (cloud-init, provisor's first-boot key
    report) is the key its sshd presents.
    """
    ssh = _directory_anew(directory / "upper" / "etc" / "ssh", 0o755)
    for lower in Path("/etc/ssh").glob("ssh_host_*"):
        whiteout = ssh / lower.name
        whiteout.unlink(missing_ok=True)
        os.mknod(whiteout, stat.S_IFCHR, os.makedev(0, 0))
    for name in (HOST_KEY, f"{HOST_KEY}.pub"):
        link = ssh / name
        link.unlink(missing_ok=True)
        link.symlink_to(directory / name)


# Debian's own defaults for root's dot files (base-files), else the skeleton.
_ROOT_DOTFILES = {
    ".bashrc": ("/usr/share/base-files/dot.bashrc", "/etc/skel/.bashrc"),
    ".profile": ("/usr/share/base-files/dot.profile", "/etc/skel/.profile"),
}


def _fresh_root_home(directory: Path) -> None:
    """Give the host a /root of its own, as a new server has, not the machine's.

    The machine's /root holds its operator's dot files: secrets (tokens in .npmrc and
    the like) and shell start-up (`pyenv init` costs ~0.2 s of every SSH command). So
    /root is an overlay over an empty lower dir instead (overlayfs ignores an opaque
    mark on a layer's root, which would otherwise hide the lower /root).
    """
    (directory / FRESH_LOWER / "root").mkdir(parents=True, mode=0o700, exist_ok=True)
    upper = directory / "upper" / "root"
    for name, sources in _ROOT_DOTFILES.items():
        if os.path.lexists(upper / name):
            continue
        for source in sources:
            if os.path.isfile(source):
                _write_anew(upper / name, Path(source).read_bytes())
                break


def _write_runtime_files(host: SandboxHost, init: bool) -> None:
    directory = host.directory
    extra = ""
    if _sshd_has_option("PerSourcePenalties"):
        # OpenSSH >= 9.8 would throttle the bursts of connections fleet tests make.
        extra = "PerSourcePenalties no\n"
    config = _SSHD_CONFIG.format(
        name=host.name,
        address=host.address,
        port=host.port,
        directory=directory,
        host_key=HOST_KEY,
        password_authentication="yes" if host.password_login else "no",
        extra=extra,
    )
    if host.contained:
        # A contained host's root does not own "/" (the machine's, seen as nobody's):
        # sshd's check of the path to authorized_keys would refuse every key.
        config += "StrictModes no\n"
    (directory / CONFIG).write_text(config)
    if host.contained:
        _containment.prepare(directory)
        (directory / FSTAB).write_text(_containment.fstab(directory, host.name, host.mounts))
        _containment.write_config(
            directory,
            address=host.address,
            port=host.port,
            hostname=host.effective_hostname,
            mounts=host.mounts,
            cgroup=host.cgroup,
            init_script=directory / INIT_SCRIPT if init else None,
            log=directory / LOG,
            console=directory / CONSOLE_LOG,
            sshd=SSHD,
            sshd_config=directory / CONFIG,
            fstab_path=directory / FSTAB,
            network=host.network,
            publish=host.publish,
            relays=host.relays,
        )
        return
    (directory / FSTAB).write_text(_fstab(directory, host.name, host.mounts))
    cgroup = _BOOT_CGROUP.format(cgroup=host.cgroup) if host.cgroup is not None else ""
    boot = _BOOT_SCRIPT.format(
        fstab=FSTAB,
        sshd=SSHD,
        config=CONFIG,
        cgroup=cgroup,
        init=_BOOT_INIT.format(init=INIT_SCRIPT, console=CONSOLE_LOG) if init else "",
    )
    (directory / BOOT).write_text(boot)


def _fstab(directory: Path, name: str, mounts: Sequence[Mount] = ()) -> str:
    """The host's mounts, in order, for `mount -a` inside its mount namespace."""
    lines = [f"# provisor sandbox host {name}: mounted by {BOOT} in the host's namespace"]
    for lower in OVERLAID_DIRS:
        rel = lower.lstrip("/")
        # Only directories the machine had when the host was created have layers.
        if (directory / "upper" / rel).is_dir():
            fresh = directory / FRESH_LOWER / rel
            below = fresh if fresh.is_dir() else lower
            options = (
                f"lowerdir={below},upperdir={directory}/upper/{rel},workdir={directory}/work/{rel}"
            )
            lines.append(f"provisor-{name} {lower} overlay {options} 0 0")
    lines += [
        f"provisor-{name}-run /run tmpfs mode=0755,nosuid,nodev,size=64m 0 0",
        f". {directory} none bind,X-mount.mkdir 0 0",
        # sshd's privilege separation directory (it chroots there: root-owned, empty).
        f"provisor-{name}-sshd /run/sshd tmpfs mode=0755,size=64k,X-mount.mkdir 0 0",
    ]
    # Last: their sources may live in the host directory, bound back just above.
    for mount in mounts:
        # A missing mount point is made only inside the host's copy-on-write layers:
        # anywhere else it would be made in the machine's own root filesystem.
        mkdir = ",X-mount.mkdir" if _in_overlay(mount.target) else ""
        if mount.kind == "loop":
            lines.append(f"{mount.source} {mount.target} ext4 loop{mkdir} 0 0")
        else:
            lines.append(f"{mount.source} {mount.target} none bind{mkdir} 0 0")
    return "\n".join(lines) + "\n"


def _in_overlay(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in OVERLAID_DIRS)


def check_mount_target(mount: Mount) -> None:
    """Refuse a mount point the host cannot make without touching the machine's own root."""
    target = mount.target
    if target in OVERLAID_DIRS:
        raise ProvisorError(
            f"cannot mount over {target}: it is the host's copy-on-write layer; "
            f"mount below it (e.g. {target}/data)"
        )
    if _in_overlay(target):
        return
    if target.split("/")[1] in ("proc", "sys", "dev", "run", "boot") or not os.path.isdir(target):
        raise ProvisorError(
            f"cannot mount at {target}: a mount point must be below one of the host's "
            f"copy-on-write directories ({' '.join(OVERLAID_DIRS)}) or an existing directory "
            "of the machine such as /mnt (outside them the host shares the machine's root "
            "filesystem, where it creates nothing)"
        )


def _launch(
    name: str, address: str, port: int, base_dir: Path, options: BootOptions
) -> SandboxHost:
    """Everything up to the spawn of the host: blocking file work, run in a thread."""
    unshare = _require_tools()
    for mount in options.mounts:
        check_mount_target(mount)
    procs.check_port_free(address, port)
    base_dir.mkdir(parents=True, exist_ok=True)
    key_path, client_public = client_key(base_dir)
    directory = base_dir / name
    directory.mkdir(mode=0o755, exist_ok=True)
    if not (directory / HOST_KEY).exists():
        _prepare_disk(directory, options.hostname, address, client_public, options.authorized_keys)
        host_public = new_host_key(directory)
    else:
        host_public = (directory / f"{HOST_KEY}.pub").read_text().strip()
    init = directory / INIT_SCRIPT
    if options.init_script is not None:
        # Both may hold secrets (user-data): for root's eyes only.
        tmp = init.with_name(f".{INIT_SCRIPT}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(options.init_script)
        tmp.replace(init)
        os.close(os.open(directory / CONSOLE_LOG, os.O_WRONLY | os.O_CREAT, 0o600))
    host = SandboxHost(
        name=name,
        address=address,
        port=port,
        user="root",
        directory=directory,
        isolation="namespaces",
        client_key=key_path,
        host_public_key=host_public,
        pid=0,
        hostname=options.hostname,
        mounts=tuple(options.mounts),
        cgroup=options.cgroup,
        contained=options.contain and _containment.available(base_dir),
        network=options.network,
        publish=options.publish,
        relays=options.relays,
        password_login=options.password_login,
    )
    _write_runtime_files(host, init=init.exists())
    log = directory / LOG
    with log.open("a") as f:
        f.write(f"--- provisor: boot {name} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ---\n")
    argv = (
        _containment.boot_argv(directory)
        if host.contained
        else [
            unshare,
            "--uts",
            "--pid",
            "--mount",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            # If the top process dies, so does sshd (PID 1 inside), and with it the namespace.
            "--kill-child=SIGKILL",
            "--",
            "/bin/sh",
            str(directory / BOOT),
            str(directory),
            options.hostname,
        ]
    )
    # A contained host's init is a fork of its top process: its environment (/proc/1/environ
    # inside) must hold nothing of this process's, which may have secrets.
    env = _containment.boot_environment() if host.contained else None
    host = replace(host, pid=procs.spawn_detached(argv, log=log, cwd=directory, env=env))
    write_state(host)  # first, so that a host that fails to come up can still be stopped
    return host


async def start(
    name: str, address: str, port: int, base_dir: Path, options: BootOptions, *, timeout: float
) -> SandboxHost:
    # The file work is slow on some disks (~1 ms per mkdir): procs.boot does it off the
    # event loop.
    return await procs.boot(
        lambda: _launch(name, address, port, base_dir, options), stop, log=LOG, timeout=timeout
    )


def init_pid(host: SandboxHost) -> int | None:
    """Machine pid of the host's PID 1 (its sshd), or None when the host is down."""
    if not procs.is_alive(host.pid, host.directory):
        return None
    found = procs.children(host.pid)
    return found[0] if found else None


def is_running(host: SandboxHost) -> bool:
    return procs.is_alive(host.pid, host.directory)


async def stop(host: SandboxHost) -> None:
    directory = host.directory
    if procs.is_alive(host.pid, directory):
        init = procs.children(host.pid)
        namespace = procs.pid_namespace(init[0]) if init else None
        # Kill PID 1 inside first: unshare then reaps it and exits by itself.
        for pid in init or [host.pid]:
            procs.kill(pid)
        clean = await poll_until(lambda: not procs.is_alive(host.pid, directory), timeout=3.0)
        if not clean:
            procs.kill(host.pid)
            await poll_until(lambda: not procs.is_alive(host.pid, directory), timeout=3.0)
        # When unshare could reap PID 1, the kernel had already killed and reaped the
        # rest of the PID namespace (the exit of a namespace's init waits for that).
        if namespace is not None and not clean:
            await poll_until(lambda: not procs.in_pid_namespace(namespace), timeout=5.0)
    # Whatever still names the directory (e.g. an sshd whose top process was killed by
    # hand) belongs to this host too.
    left = await procs.referring_to_async(directory)
    for pid in left:
        procs.kill(pid)
    if left and not await poll_until(lambda: not procs.referring_to(directory), timeout=5.0):
        survivors = ", ".join(str(p) for p in procs.referring_to(directory))
        raise ProvisorError(f"sandbox host {host.name}: processes survived stop: {survivors}")


async def rekey(host: SandboxHost, *, timeout: float) -> SandboxHost:
    """New host key; a running sshd re-executes itself (SIGHUP) to load it.

    A contained host starts an sshd per connection: the next one presents the new key.
    """
    init = None if host.contained else init_pid(host)
    log = host.directory / LOG
    offset = log.stat().st_size if log.exists() else 0
    line = new_host_key(host.directory)
    new = replace(host, host_public_key=line)
    write_state(new)
    if init is None:
        return new
    procs.kill(init, signal.SIGHUP)
    listening = f"Server listening on {host.address} port {host.port}."
    if not await procs.wait_for_log(log, offset, listening, timeout=timeout):
        raise ProvisorError(
            f"sandbox host {host.name}: sshd did not come back after SIGHUP within "
            f"{timeout:g} s; last lines of {log}:\n{log_tail(log)}"
        )
    await procs.wait_for_ssh(
        host.address,
        host.port,
        alive=lambda: procs.is_alive(host.pid, host.directory),
        log=log,
        what=f"sandbox host {host.name}",
        timeout=timeout,
    )
    return new


def authorized_keys_path(host: SandboxHost) -> Path:
    init = init_pid(host)
    if init is not None:
        # Through the host's own mount namespace: editing the upper dir behind a mounted
        # overlay's back is undefined and in practice unseen by the host (cached dentries).
        return Path(f"/proc/{init}/root/root/.ssh/authorized_keys")
    return host.directory / "upper" / "root" / ".ssh" / "authorized_keys"
