"""The exceptions of quicswarm: one hierarchy under :class:`Error`.

Each carries ``code``, the wire code of the failure (see ``quicswarm::ErrorCode`` in the Rust
docs), or ``None`` when the failure happened locally.
"""

from typing import Optional


class Error(Exception):
    """Any quicswarm failure."""

    code: Optional[int] = None

    def __init__(self, message: str = "", code: Optional[int] = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ConnectError(Error):
    """The connection to a gateway could not be made."""


class PoolFull(ConnectError):
    """Every handler of the gateway is in use."""

    code = 3


class FingerprintMismatch(ConnectError):
    """The gateway showed another certificate than the one pinned for it."""


class UnknownSubroutine(Error):
    """No subroutine of that name is registered on the gateway."""

    code = 4


class WrongKind(Error):
    """The subroutine exists but is a stream, batch or sink, not what was asked."""

    code = 14


class BadArgs(Error):
    """The arguments did not suit the subroutine."""

    code = 5


class SubroutineFailed(Error):
    """The subroutine raised (or returned an error); the message is its ``Type: message``."""

    code = 6


class PermissionDenied(Error):
    """The gateway does not allow this request."""

    code = 8


class TooLarge(Error):
    """A frame, item or buffer was over a limit."""

    code = 2


class LimitExceeded(Error):
    """A count or size in the request was over the gateway's limit (the message names it)."""

    code = 22


class Timeout(Error):
    """No answer in time."""

    code = 16


class ConnectionLost(Error):
    """The connection was lost while the operation ran."""


class Cancelled(Error):
    """The other side cancelled the operation."""

    code = 10


class ProtocolError(Error):
    """The peer broke the protocol."""

    code = 1


class Unsupported(Error):
    """Not available on this transport (a QUIC-only feature over TLS over TCP)."""

    code = 21


class TransferFailed(Error):
    """A file transfer failed, wholly or for some files."""


__all__ = [name for name, value in globals().items() if isinstance(value, type) and issubclass(value, Error)]
