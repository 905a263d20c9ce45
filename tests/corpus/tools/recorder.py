"""A recording socket: a unix socket in front of a dockerd that forwards
every connection byte for byte and keeps what went each way, with the time
each piece came. Not part of berth; record.py drives it.

    with Recorder(listen_path, upstream_path) as rec:
        ... run a client with DOCKER_HOST=unix://listen_path ...
    rec.connections  # [Connection(opened, sent=[(t, bytes)], answered=[(t, bytes)])]
"""

import collections
import os
import socket
import threading
import time

Connection = collections.namedtuple("Connection", "opened sent answered")


class Recorder:
    def __init__(self, listen_path, upstream_path):
        self.listen_path, self.upstream_path = listen_path, upstream_path
        self.connections = []
        self._lock = threading.Lock()
        self._threads = []
        self._sockets = []

    def __enter__(self):
        if os.path.exists(self.listen_path):
            os.unlink(self.listen_path)
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(self.listen_path)
        os.chmod(self.listen_path, 0o666)
        self._listener.listen(64)
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self, grace=1.0):
        """Stop accepting; give open connections `grace` seconds to end, then cut them."""
        if self._listener.fileno() < 0:
            return
        self._listener.close()
        os.unlink(self.listen_path)
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(max(0, deadline - time.monotonic()))
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        for s in self._sockets:
            s.close()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.upstream_path)
            conn = Connection(time.monotonic(), [], [])
            with self._lock:
                self.connections.append(conn)
                self._sockets += [client, upstream]
            for src, dst, log in ((client, upstream, conn.sent), (upstream, client, conn.answered)):
                t = threading.Thread(target=_pump, args=(src, dst, log), daemon=True)
                t.start()
                self._threads.append(t)


def _pump(src, dst, log):
    """Copy src to dst until EOF, passing the half-close on, logging each piece."""
    try:
        while data := src.recv(1 << 16):
            log.append((time.monotonic(), data))
            dst.sendall(data)
    except OSError:
        pass
    log.append((time.monotonic(), b""))  # its end: a client that half-closes is replayed so
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
