"""TCP transport of MacNet (JSON or binary port): moves bytes, knows nothing of frames.

Framing and parsing are the sans-IO codec's (:mod:`._codec`); request/response
matching, the lock and timeouts are the client's (:mod:`._client`); the byte
moving is the shared :class:`~cellguard.drivers._tcp.TcpStream`'s.
"""

from __future__ import annotations

from cellguard.drivers._tcp import READ_CHUNK_BYTES, TcpStream

__all__ = ["READ_CHUNK_BYTES", "MacNetBinaryTransport", "MacNetTransport"]


class MacNetTransport(TcpStream):
    """A connected TCP stream to the Maccor tester (MacTest32) (:meth:`open` builds one)."""

    _server = "the Maccor MacNet server"
    _connect_hint = (
        "check the host and port (System.ini's MacNet_JSON_Port, 57570 by default, "
        "MacNet_TCP_Port, 57560) and the tester PC's firewall"
    )


class MacNetBinaryTransport(MacNetTransport):
    """The same, to the binary port (errors name it, so a closed 57560 is told apart)."""

    _server = "the Maccor MacNet binary server"
