"""The remote side of fleet changes: POSIX shell scripts that read (probe) and write host
objects, generated here and run as `sh -s` by root (see `shell.py` for the frame)."""

from provisor.fleet.changes.probe import output_limit, parse_probe, probe_script
from provisor.fleet.changes.run import run_script
from provisor.fleet.changes.write import WriteReport, parse_write, write_script

__all__ = [
    "WriteReport",
    "output_limit",
    "parse_probe",
    "parse_write",
    "probe_script",
    "run_script",
    "write_script",
]
