"""asyncssh, imported once for all of provisor.

cryptography deprecates DSA and warns whenever asyncssh touches its DSA classes, which
asyncssh does on import: ten lines of `CryptographyDeprecationWarning` before the output
of every command. provisor never offers DSA keys, so that warning is silenced here, for
that category raised from asyncssh's own modules only; every other warning still shows.

asyncssh's logging decides late whether a message is kept: see `_log_only_what_is_kept`.
"""

import logging
import warnings
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh\.")

import asyncssh as asyncssh  # noqa: E402  (after the filter, so its import is quiet)

__all__ = ["asyncssh"]


def _log_only_what_is_kept() -> None:
    """asyncssh formats every log message's arguments, and describes every packet it
    sends or receives (name, size, note), before its logger decides to keep none of it:
    about a tenth of a warm pool's CPU per command. Here the decision comes first; what
    is logged when logging is on is unchanged."""
    from asyncssh.logging import SSHLogger
    from asyncssh.packet import SSHPacketLogger

    log_message = SSHLogger.log
    log_packet = SSHPacketLogger._log_packet

    def log(self: SSHLogger, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            log_message(self, level, msg, *args, **kwargs)

    def _log_packet(self: SSHPacketLogger, *args: Any) -> None:
        # SSHLogger.packet logs at debug level 3 only, at DEBUG
        if SSHLogger._debug_level >= 3 and self.logger.isEnabledFor(logging.DEBUG):
            log_packet(self, *args)

    setattr(SSHLogger, "log", log)  # noqa: B010 (a method replaced: mypy would refuse it)
    setattr(SSHPacketLogger, "_log_packet", _log_packet)  # noqa: B010


_log_only_what_is_kept()
