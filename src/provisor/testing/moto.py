"""A real `moto_server` as the EC2 API for tests of the `ec2` provider.

moto runs as a subprocess on a free 127.0.0.1 port, so the provider talks HTTP to it
exactly as to any EC2-compatible endpoint (signing, XML parsing, retries included),
instead of being patched in-process. It runs no machines: `ec2plane.DataPlane` emulates
those with the local provider.

    with MotoServer() as moto:
        images = moto.register_images(["debian-12"], "us-east-1")
        ec2 = ec2_client(moto.url, "us-east-1")

moto is started with validation on (AMIs, instance types, key pairs), so a provider
that sends a wrong image id or type fails as it would against EC2, and without its
default AMIs, which it would otherwise load again (and leak) at every reset.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from provisor.testing._background import Background

__all__ = ["FAKE_CREDENTIALS", "MotoServer", "MotoServerError", "ec2_client", "free_port"]

# moto accepts any credentials; explicit ones keep boto3 from looking for real ones
# (~/.aws, the instance metadata service) and from sending anything off this computer.
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

_ENVIRONMENT = {
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
    "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
    "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT = 60.0  # seconds: moto imports a lot; two busy cores are slow
STOP_TIMEOUT = 10.0


class MotoServerError(RuntimeError):
    """moto_server did not start or answer; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick for a bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ec2_client(url: str, region: str, *, attempts: int = 1, timeout: float = 30.0) -> Any:
    """A boto3 EC2 client for `url` with fake credentials, making `attempts` tries per call.

    Note botocore's retry settings: `max_attempts` counts the retries *after* the first
    try (so 1 means two tries); `total_max_attempts` counts every try, used here.
    """
    config = Config(
        retries={"total_max_attempts": attempts, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    return boto3.client(
        "ec2", endpoint_url=url, region_name=region, config=config, **FAKE_CREDENTIALS
    )


class MotoServer(Background):
    """One `moto_server` subprocess on 127.0.0.1, its output in `log_file`."""

    def __init__(self, log_file: Path | None = None, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if log_file is None:
            handle, name = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
            os.close(handle)
            log_file = Path(name)
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """moto_server's process id while it runs (benchmarks read its CPU)."""
        return self._process.pid if self._process is not None else None

    def __repr__(self) -> str:
        return f"MotoServer({self.url!r}, log_file={str(self.log_file)!r})"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start moto and return once it answers HTTP; fail with its log's tail."""
        if self._process is not None:
            raise MotoServerError(f"{self!r} is already started")
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **_ENVIRONMENT},
        )
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                self._cleanup()
                raise MotoServerError(f"moto_server exited with status {code}{self._tail()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise MotoServerError(
                    f"moto_server did not answer on {self.url} within {timeout:.0f} s{self._tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate moto, wait for it, kill it if it does not go."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self._cleanup()

    def reset(self) -> None:
        """Forget every resource in every region (moto's own reset API)."""
        status, body = self._request("POST", "/moto-api/reset")
        if status != 200:
            raise MotoServerError(f"moto reset answered HTTP {status}: {body[:200]!r}")

    def register_images(self, names: Iterable[str], region: str) -> dict[str, str]:
        """Register an EBS-backed AMI per name (unless one has it); name -> image id.

        moto accepts a bare name (and ignores the mappings, giving every image a 15 GiB
        /dev/sda1 root), but EC2 wants a root device, so this sends what EC2 would need.
        moto allows two images with one name; this returns the existing one instead.
        """
        client = ec2_client(self.url, region)
        images: dict[str, str] = {}
        for name in names:
            found = client.describe_images(
                Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
            )["Images"]
            if found:
                images[name] = str(found[0]["ImageId"])
                continue
            answer = client.register_image(
                Name=name,
                Architecture="x86_64",
                VirtualizationType="hvm",
                RootDeviceName="/dev/xvda",
                BlockDeviceMappings=[
                    {
                        "DeviceName": "/dev/xvda",
                        "Ebs": {"VolumeSize": 8, "VolumeType": "gp3", "DeleteOnTermination": True},
                    }
                ],
            )
            images[name] = str(answer["ImageId"])
        return images

    # --- helpers ---------------------------------------------------------------------------

    def _answers(self) -> bool:
        try:
            status, _ = self._request("GET", "/moto-api/", timeout=2.0)
        except OSError:
            return False
        return status < 500

    def _request(self, method: str, path: str, *, timeout: float = 30.0) -> tuple[int, bytes]:
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"; the end of {self.log_file}:\n{tail}" if tail else f"; {self.log_file} is empty"

    def _cleanup(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
