"""Log every connection a provisor process opens (for the EC2 tests).

Imported by Python at start-up in every process whose PYTHONPATH has this directory:
the CLI, and the background worker and its supervisor, which the CLI starts with its
own environment. With PROVISOR_TEST_CONNECT_LOG=FILE, an audit hook sees every
`socket.connect` of the process, whatever library makes it (asyncssh, boto3, httpx),
so a test can prove provisor opened no connection to an address it was not given.
Crash points (provisor.testing.crash) work here too: Python imports one sitecustomize.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from provisor.testing.crash import install

LOG = os.environ.get("PROVISOR_TEST_CONNECT_LOG")


def _log_connect(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and LOG:
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with open(LOG, "a") as log:
                log.write(f"{address[0]} {address[1]}\n")


if LOG:
    sys.addaudithook(_log_connect)
install()
