"""asyncssh, imported once for all of provisor.

cryptography deprecates DSA and warns whenever asyncssh touches its DSA classes, which
asyncssh does on import: ten lines of `CryptographyDeprecationWarning` before the output
of every command. provisor never offers DSA keys, so that warning is silenced here, for
that category raised from asyncssh's own modules only; every other warning still shows.
"""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh\.")

import asyncssh as asyncssh  # noqa: E402  (after the filter, so its import is quiet)

__all__ = ["asyncssh"]
