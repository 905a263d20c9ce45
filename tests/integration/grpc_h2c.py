"""gRPC to dockerd's BuildKit as buildx's docker driver speaks it: `POST
/grpc` upgraded to h2c on a unix socket, one unary call per connection
(h2 frames the HTTP/2), and the few protobuf fields the tests write."""

import socket

import h2.config
import h2.connection
import h2.events

UPGRADE = b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


def call(sock_path, method, message=b"", upgrade=UPGRADE, timeout=20):
    """One unary call: (grpc-status, reply message, trailers). Where the
    upgrade is not switched, (None, the answer's head, {}); where the
    connection ends before the call does, ("EOF", what came, trailers).
    A socket timeout raises TimeoutError."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(upgrade)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)  # byte by byte: what follows the head is HTTP/2
            if not chunk:
                return None, head, {}
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            return None, head, {}
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"),
                                   (":path", method), ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(stream, b"\0" + len(message).to_bytes(4, "big") + message, end_stream=True)
        s.sendall(conn.data_to_send())
        reply, trailers = b"", {}
        while True:
            data = s.recv(65536)
            if not data:
                return "EOF", reply, trailers
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    reply += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                    trailers.update((k.decode(), v.decode()) for k, v in event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    return trailers.get("grpc-status"), reply[5:], trailers  # past the 5-byte message prefix
            s.sendall(conn.data_to_send())


# --- protobuf, the little the tests write ------------------------------------------------------

def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(number, value):
    """A length-delimited field (string, bytes or message)."""
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def llb_http(url):
    """An LLB Definition: one http source, and the terminal op that names it."""
    import hashlib
    source = field(3, field(1, url))  # Op.source = SourceOp{identifier}
    digest = "sha256:" + hashlib.sha256(source).hexdigest()
    terminal = field(1, field(1, digest) + b"\x10\x00")  # Op.inputs = [Input{digest, index 0}]
    return field(1, source) + field(1, terminal)


def solve_http(ref, url):
    """A SolveRequest (Ref=1, Definition=2) whose build is a fetch of `url` by dockerd."""
    return field(1, ref) + field(2, llb_http(url))
