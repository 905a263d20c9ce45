"""A recording stand-in for dockerd (tier 1): keeps every request that
reaches it, as it came, and answers each as dockerd would in shape only
(201 with an Id to a create, 101 to an upgrade, a container's JSON and a
20.10 dockerd's version and info to berth's own look-ups, 200 with {} to
the rest)."""

import collections
import json
import os
import socket
import socketserver
import threading

import corpus

Received = collections.namedtuple("Received", "version method target headers body")


class StandIn(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path):
        self.received = []
        self.lock = threading.Lock()
        super().__init__(path, _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()
        os.unlink(self.server_address)

    def forwarded(self):
        """What reached it from clients (HTTP/1.1: berth's own look-ups go as HTTP/1.0)."""
        with self.lock:
            return [r for r in self.received if r.version == b"HTTP/1.1"]

    def clear(self):
        with self.lock:
            self.received.clear()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        src = corpus.Source(sock=self.request, deadline=float("inf"))
        src.more = _blocking_more(src, self.request)
        while True:
            head = corpus.read_head(src)
            if head is None:
                return
            first, headers = head
            method, target, version = first.split(b" ", 2)
            if corpus.header(headers, b"transfer-encoding"):
                body, _ = corpus.read_chunked(src)
            else:
                body = src.exactly(int(corpus.header(headers, b"content-length") or 0))
            with self.server.lock:
                self.server.received.append(Received(version, method, target, headers, body))
            self.request.sendall(_answer(method, target, headers))
            if version == b"HTTP/1.0" or (corpus.header(headers, b"connection") or b"").lower() != b"keep-alive":
                try:
                    self.request.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return


def _blocking_more(src, sock):
    def more():
        data = sock.recv(1 << 16)
        if not data:
            src.eof = True
            return False
        src.buf += data
        return True
    return more


def _answer(method, target, headers):
    path = target.split(b"?")[0].decode("latin-1")
    if corpus.header(headers, b"upgrade"):
        return b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    if method == b"POST" and path.endswith(("/containers/create", "/exec")):
        return _json(201, {"Id": corpus.fake_id(path), "Warnings": []})
    parts = path.split("/")
    if method == b"GET" and len(parts) >= 4 and parts[-3] == "containers" and parts[-1] == "json":
        # berth's own look-up of a container (docker cp): its id, and no bind mounts
        return _json(200, {"Id": corpus.fake_id(parts[-2]), "Mounts": []})
    if method == b"GET" and path in ("/version", "/info") and not corpus.header(headers, b"user-agent"):
        # berth's own look-ups before a BuildKit build: a dockerd of 20.10, with cgroupfs
        return _json(200, {"ApiVersion": "1.41", "CgroupDriver": "cgroupfs"})
    if method == b"HEAD":
        return b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 0\r\n\r\n"
    return _json(200, {})


def _json(status, obj):
    body = json.dumps(obj).encode()
    return (b"HTTP/1.1 %d X\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (status, len(body)) + body)
