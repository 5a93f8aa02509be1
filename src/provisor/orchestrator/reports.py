"""Per-machine reports: script output kept by the controller, plus the console log."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

from provisor.fleet.results import HostResult


def deployment_dir(home: Path, deployment: str) -> Path:
    return home / "deployments" / deployment


def save_script_output(
    home: Path, deployment: str, machine: str, number: int, result: HostResult
) -> None:
    directory = deployment_dir(home, deployment) / "logs" / machine
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"script-{number:02d}.stdout").write_bytes(result.stdout)
    (directory / f"script-{number:02d}.stderr").write_bytes(result.stderr)
    status = result.exit_code if result.exit_code is not None else result.outcome.value
    (directory / f"script-{number:02d}.status").write_text(f"{status}\n")


def write_reports(
    home: Path, deployment: str, machines: list[str], consoles: Mapping[str, str]
) -> Path:
    """`reports/<machine>.tar.gz` for every machine, success or failure."""
    base = deployment_dir(home, deployment)
    reports = base / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    for machine in machines:
        target = reports / f"{machine}.tar.gz"
        with tarfile.open(target, "w:gz") as archive:
            logs = base / "logs" / machine
            if logs.is_dir():
                for path in sorted(logs.iterdir()):
                    archive.add(path, arcname=f"{machine}/{path.name}")
            console = consoles.get(machine, "").encode()
            info = tarfile.TarInfo(f"{machine}/console.log")
            info.size, info.mtime = len(console), int(time.time())
            archive.addfile(info, io.BytesIO(console))
    return reports
