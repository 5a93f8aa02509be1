"""A real `provisor server` (uvicorn on loopback) with users of several roles and tenants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from served import Server, start_server

from provisor.store import Store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server-home")
    with start_server(home) as (url, process):
        store = Store(f"sqlite:///{home / 'provisor.db'}")
        try:
            yield Server(url=url, home=home, store=store, process=process)
        finally:
            store.close()
