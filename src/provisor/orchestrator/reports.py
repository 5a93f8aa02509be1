"""Per-machine reports: script output kept by the controller, plus the console log.

What is kept has the deployment's secrets masked already (the caller masks a result
before it is saved); every file and directory is private to the controller's user.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

from provisor.core.masking import Masker
from provisor.files import open_private, private_dir, write_private
from provisor.fleet.results import HostResult


def deployment_dir(home: Path, name: str, instance: str) -> Path:
    """Where one deployment's logs and reports are kept: by its name, for people, and by
    its instance, which is never reused (two tenants' deployments may share a name, and a
    name comes back after `down`)."""
    return home / "deployments" / f"{name}.{instance}"


def save_script_output(base: Path, machine: str, number: int, result: HostResult) -> None:
    """Keep one script's output under `base` (the deployment's `deployment_dir`)."""
    directory = private_dir(base / "logs" / machine)
    write_private(directory / f"script-{number:02d}.stdout", result.stdout)
    write_private(directory / f"script-{number:02d}.stderr", result.stderr)
    status = result.exit_code if result.exit_code is not None else result.outcome.value
    write_private(directory / f"script-{number:02d}.status", f"{status}\n".encode())


def write_reports(
    base: Path, machines: list[str], consoles: Mapping[str, str], masker: Masker
) -> Path:
    """`reports/<machine>.tar.gz` under `base` (the deployment's `deployment_dir`) for
    every machine, success or failure."""
    reports = private_dir(base / "reports")
    for machine in machines:
        target = reports / f"{machine}.tar.gz"
        with (
            os.fdopen(open_private(target, os.O_WRONLY | os.O_TRUNC), "wb") as out,
            tarfile.open(fileobj=out, mode="w:gz") as archive,
        ):
            logs = base / "logs" / machine
            if logs.is_dir():
                for path in sorted(logs.iterdir()):
                    archive.add(path, arcname=f"{machine}/{path.name}")
            console = masker.text(consoles.get(machine, "")).encode()
            info = tarfile.TarInfo(f"{machine}/console.log")
            info.size, info.mtime, info.mode = len(console), int(time.time()), 0o600
            archive.addfile(info, io.BytesIO(console))
    return reports
