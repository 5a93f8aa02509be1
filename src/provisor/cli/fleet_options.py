"""Options and checks shared by the commands that run fleet jobs (run, copy, fetch, kill,
hosts gather, config, patch): one meaning per option across them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Parallel = Annotated[int, typer.Option("--parallel", "-p", help="hosts worked on at once")]
ConnectTimeout = Annotated[
    float,
    typer.Option(
        "--connect-timeout", min=0.1, max=3600, help="seconds to get an SSH session per host"
    ),
]
User = Annotated[
    str | None, typer.Option("--user", "-l", help="login user for hosts that name none")
]
Identity = Annotated[
    Path | None, typer.Option("--identity", "-i", help="private key file for hosts without one")
]
AskPass = Annotated[
    bool, typer.Option("--ask-pass", "-A", help="ask once for a password used on every host")
]
MaxOutput = Annotated[
    str | None,
    typer.Option(
        "--max-output",
        help="bytes of each host's stdout and stderr kept and shown, e.g. 64K, 1M; the rest "
        "is counted, and -o/-e files get all of it",
        show_default="max_output setting, 1M",
    ),
]
StallTimeout = Annotated[
    str | None,
    typer.Option(
        "--stall-timeout",
        help="stop a host's transfer after this long without data moving, e.g. 30s, 5m",
        show_default="stall_timeout setting, 60s",
    ),
]
OutputMode = Annotated[
    str | None,
    typer.Option("--output", help="stream, fold or json (default: fold above 10 hosts)"),
]
