"""The tokens `provisor login` keeps, one per server, in `credentials.json` (mode 0600).

Written whole to a new file that is 0600 from its creation, then renamed over the old
one: no moment where the tokens are readable by others or half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from provisor.core.errors import InvalidInput

FILE = "credentials.json"


def _key(url: str) -> str:
    return url.strip().rstrip("/")


def _read(home: Path) -> dict[str, str]:
    path = home / FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", field="credentials") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InvalidInput(f"{path} is not a map of server to token", field="credentials")
    return data


def _write(home: Path, data: dict[str, str]) -> None:
    import tempfile  # here: reading a token (every `run --server`) needs none of it

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=home, prefix=".credentials-")  # 0600 from the start
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(name, home / FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def token_for(home: Path, url: str) -> str | None:
    return _read(home).get(_key(url))


def save_token(home: Path, url: str, token: str) -> None:
    _write(home, {**_read(home), _key(url): token})


def forget_token(home: Path, url: str) -> bool:
    data = _read(home)
    if data.pop(_key(url), None) is None:
        return False
    _write(home, data)
    return True
