"""Log lines never carry a secret: the secrets this process knows are masked in every
log record, whoever logs it (provisor, DBOS, asyncssh, uvicorn) and wherever it goes
(the terminal, `worker.log`).

Code that unseals or receives secrets tells this module (`remember`, under a scope
such as a deployment or a job) and takes them back when done (`forget`). The first
`remember` installs a log record factory; a process that never handles a secret pays
nothing.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

from provisor.core.masking import NO_SECRETS, Masker

_lock = threading.Lock()
_scopes: dict[str, Masker] = {}
_current: list[Masker] = [NO_SECRETS]
_installed: list[bool] = [False]


def remember(scope: str, masker: Masker) -> None:
    """Mask `masker`'s secrets in log records from now on (until `forget(scope)`)."""
    if not masker:
        return
    with _lock:
        _scopes[scope] = masker
        _current[0] = _union()
        if not _installed[0]:
            _install()
            _installed[0] = True


def forget(scope: str) -> None:
    with _lock:
        if _scopes.pop(scope, None) is not None:
            _current[0] = _union()


def current() -> Masker:
    """Every secret known in this process now."""
    return _current[0]


def _union() -> Masker:
    return Masker(frozenset().union(*(m.secrets for m in _scopes.values())))


def _install() -> None:
    make = logging.getLogRecordFactory()

    def masked(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        masker = _current[0]
        if masker:
            # The message is formatted here, once, and its arguments dropped: a secret
            # may hide in either, and handlers would format them later, unmasked.
            try:
                message = record.getMessage()
            except Exception:  # arguments that do not fit: logged as they are, masked
                message = f"{record.msg} {record.args}"
            record.msg, record.args = masker.text(message), None
            if record.exc_info and record.exc_info[0] is not None:
                text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                record.exc_text, record.exc_info = masker.text(text), None
            if record.stack_info:
                record.stack_info = masker.text(record.stack_info)
        return record

    logging.setLogRecordFactory(masked)


__all__ = ["current", "forget", "remember"]
