"""TCP transport of the Neware BTS 8 API: moves bytes, knows nothing of frames or XML.

Framing and parsing live in the sans-IO codec (:mod:`._codec`); request/response
matching, locking and timeouts live in the client (:mod:`._client`); the byte moving
is the shared :class:`~cellguard.drivers._tcp.TcpStream`'s.
"""

from __future__ import annotations

from cellguard.drivers._tcp import READ_CHUNK_BYTES, TcpStream

__all__ = ["READ_CHUNK_BYTES", "TcpTransport"]


class TcpTransport(TcpStream):
    """A connected TCP stream to a BTS server (:meth:`open` builds one)."""

    _server = "the BTS server"
    _timeout_hint = "; check the host, the network and that the BTS server is running"
    _connect_hint = (
        "check the host and port and that the BTS server is running with its API enabled"
    )
