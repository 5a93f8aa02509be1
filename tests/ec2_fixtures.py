"""Fixtures for the EC2 tests: one real moto_server per session, reset for each test,
with the project's fault-injecting proxy in front of it (see provisor.testing.moto and
provisor.testing.faultproxy). Imported by conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from provisor.testing.faultproxy import FaultProxy
from provisor.testing.moto import MotoServer, MotoServerError, ec2_client

REGION = "us-east-1"
TEST_IMAGES = ("debian-12", "ubuntu-24.04")


@dataclass
class MotoEc2:
    """One test's view of moto: the API directly (`url`) and through the proxy."""

    server: MotoServer
    url: str
    region: str
    images: dict[str, str]  # image name -> AMI id
    proxy: FaultProxy

    @property
    def proxy_url(self) -> str:
        return self.proxy.url

    def client(self, *, direct: bool = False, attempts: int = 1) -> Any:
        """A boto3 EC2 client through the proxy (or straight to moto); one try per call
        unless `attempts` says more (botocore's `total_max_attempts`)."""
        url = self.url if direct else self.proxy_url
        return ec2_client(url, self.region, attempts=attempts)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto_server for the session. Failing to start is an error, never a skip."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log")
    try:
        server.start()
    except MotoServerError as exc:
        pytest.fail(f"moto_server is needed for the EC2 tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> Iterator[MotoEc2]:
    """moto as new, with the test AMIs registered and a fault proxy in front."""
    moto_server.reset()
    images = moto_server.register_images(TEST_IMAGES, REGION)
    with FaultProxy(moto_server.url) as proxy:
        yield MotoEc2(moto_server, moto_server.url, REGION, images, proxy)
