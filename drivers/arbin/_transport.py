"""TCP transport of Arbin's CTI: moves bytes, knows nothing of frames.

Framing and parsing are the sans-IO codec's (:mod:`._codec`); request/response
matching, the lock and timeouts are the client's (:mod:`._client`); the byte
moving is the shared :class:`~cellguard.drivers._tcp.TcpStream`'s.
"""

from __future__ import annotations

from cellguard.drivers._tcp import READ_CHUNK_BYTES, TcpStream

__all__ = ["READ_CHUNK_BYTES", "CtiTransport"]


class CtiTransport(TcpStream):
    """A connected TCP stream to MITS Pro's CTI server (:meth:`open` builds one)."""

    _server = "the Arbin CTI server"
    _connect_hint = (
        "check the host and port (MITS Pro listens on 9031) and that CTI is enabled in MITS Pro"
    )
