"""A few Docker API calls (reads, and a body-less DELETE) over the unix socket, without the SDK.

The warm path and `status` only need "does it answer" and small GETs; the
Docker SDK (requests, urllib3, ...) costs more to import than this whole
exchange. HTTP/1.0 makes the daemon close the connection after the answer,
so there is no chunked encoding to decode.
"""

# The C module: `socket` would pull in enum and selectors on the login path.
import _socket


class EngineError(OSError):
    pass


def request(sock_path, path, timeout=2.0, method="GET"):
    """`method` (a body-less one) `path`; returns (status, body bytes).
    Raises OSError if unreachable."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(f"{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise EngineError(f"short answer from {sock_path}")
    status = int(head.split(b" ", 2)[1])
    return status, body


def listens(sock_path, timeout=1.0):
    """Something accepts connections on the socket (containerd speaks gRPC:
    a connection accepted is as far as the login check looks)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(sock_path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def ping(sock_path, timeout=1.0):
    """True when the daemon behind the socket answers /_ping with OK."""
    try:
        status, body = request(sock_path, "/_ping", timeout)
    except (OSError, ValueError, IndexError):
        return False
    return status == 200 and body.strip() == b"OK"


def get_json(sock_path, path, timeout=5.0):
    status, body = request(sock_path, path, timeout)
    if status != 200:
        raise EngineError(f"GET {path} on {sock_path} answered {status}")
    import json  # not on the warm login path, which only pings

    return json.loads(body)
