"""A viewer's frames written straight to its socket, each event's frame built once.

Fanning one event out to thousands of viewers through ASGI costs, per viewer, a
coroutine, a message dict, the text's encoding and the frame's building in uvicorn:
with viewers measured by a C client, our CPU per delivery was 1.5x the plain
``websockets`` server's, the write itself being the same one system call in both
(``bench/README.md``). A server's frames are not masked, so a text's frame is the same
bytes for every viewer: it is built once per event and written to each viewer's
transport directly, when uvicorn's own ``send`` would write it at once anyway (the
handshake done, the connection open, no close sent, no compression negotiated, the
transport not paused). In every other case (another server, a test communicator, a
paused or closing socket) the caller uses the ASGI ``send``, as before.

Several events read in one go (a hub that fell behind its subscription) are written as
their frames joined, one write per viewer for all of them: on loopback a write costs
the sender and the receiver a system call and a TCP segment each, whatever it carries,
and the frames stay separate messages on the wire.

This relies on uvicorn's sans-I/O websockets protocol (its default; uvicorn's version
is pinned in ``pyproject.toml``): ``tests/livestream/test_wire.py`` runs it on a real
uvicorn server, with and without the conditions for writing directly.
"""

from __future__ import annotations

from websockets.protocol import State

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # another ASGI server: every frame goes through its send
    WebSocketsSansIOProtocol = None

_TEXT_FIN = 0x81  # FIN set, opcode 1 (text)

# The last text framed and its frame: a fan-out hands the same text object to every
# viewer in turn, so all but the first find it here.
# Not a text to begin with: a str there (say "") would be another text's frame.
_last: tuple[object, bytes] = (object(), b"")
# The same for the last run of texts joined (``frames``).
_last_run: tuple[object, bytes] = (object(), b"")


def text_frame(text: str) -> bytes:
    """The unmasked websocket frame carrying ``text`` whole (RFC 6455, 5.2)."""
    global _last
    if _last[0] is text:
        return _last[1]
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = bytes((_TEXT_FIN, size))
    elif size < 1 << 16:
        head = bytes((_TEXT_FIN, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((_TEXT_FIN, 127)) + size.to_bytes(8, "big")
    frame = head + payload
    _last = (text, frame)
    return frame


def frames(texts: tuple[str, ...]) -> bytes:
    """The frames of ``texts``, in order, as one run of bytes (built once per run: the
    hub hands the same tuple to every viewer)."""
    global _last_run
    if _last_run[0] is texts:
        return _last_run[1]
    joined = b"".join(text_frame(text) for text in texts)
    _last_run = (texts, joined)
    return joined


def direct_socket(send):
    """uvicorn's protocol behind an ASGI ``send``, when frames may be written to it
    directly; None otherwise. Asked once the handshake is done."""
    protocol = getattr(send, "__self__", None)
    if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    if protocol.conn.extensions:  # compression negotiated: frames are not plain text
        return None
    return protocol


def release_handshake(protocol) -> None:
    """Drop the handshake's parsed request and response, which uvicorn keeps on the
    protocol for the connection's life although it reads them only until the handshake
    is done: their header objects are some 3 KB of every viewer's memory (a tracemalloc
    probe, bench/README.md). The scope keeps the request's headers for the app."""
    if protocol.handshake_complete:
        protocol.request = None
        protocol.response = None


def _writable(protocol) -> bool:
    """Whether uvicorn's ``send`` would write a frame at once."""
    return not (
        protocol.close_sent
        or not protocol.handshake_complete
        or not protocol.writable.is_set()
        or protocol.conn.state is not State.OPEN
        or protocol.transport.is_closing()
    )


def write_now(protocol, text: str) -> bool:
    """Write ``text``'s frame if uvicorn would write it at once; False: use ``send``."""
    if not _writable(protocol):
        return False
    protocol.transport.write(text_frame(text))
    return True


def write_all_now(protocol, texts: tuple[str, ...]) -> bool:
    """``write_now`` for several texts: their frames in one write, or nothing written."""
    if not _writable(protocol):
        return False
    protocol.transport.write(frames(texts))
    return True
