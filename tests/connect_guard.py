"""Run provisor's CLI and log every connection it opens (for the EC2 tests).

    python tests/connect_guard.py up ... # with PROVISOR_TEST_CONNECT_LOG=FILE

An audit hook sees every `socket.connect` of the process, whatever library makes
it (asyncssh, boto3, httpx), so a test can prove provisor opened no connection to
an address it was not given.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys
from typing import Any

LOG = os.environ["PROVISOR_TEST_CONNECT_LOG"]


def _log_connect(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with open(LOG, "a") as log:
                log.write(f"{address[0]} {address[1]}\n")


sys.addaudithook(_log_connect)
sys.argv = ["provisor", *sys.argv[1:]]
runpy.run_module("provisor", run_name="__main__", alter_sys=True)
