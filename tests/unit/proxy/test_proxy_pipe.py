"""The raw stream after a 101 (attach, exec start), through the proxy."""

import socket
import threading
import time

from berth.proxy import handler as proxy
from berth.proxy import policy


def test_dockerd_resetting_an_attach_still_ends_the_clients_stream(tmp_path):
    """dockerd closing a hijacked connection with stdin left unread resets it
    (ECONNRESET on a unix socket): the client must see its stream end, as it
    would on dockerd's own socket, not wait on a pipe nobody feeds."""
    import asyncio

    def dockerd(listener):
        conn, _ = listener.accept()
        conn.recv(65536)  # the request, and perhaps stdin after it
        conn.sendall(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nbye\n")
        time.sleep(0.2)  # stdin arrives meanwhile, and is never read
        conn.close()

    upstream = socket.socket(socket.AF_UNIX)
    upstream.bind(str(tmp_path / "dockerd.sock"))
    upstream.listen()
    threading.Thread(target=dockerd, args=(upstream,), daemon=True).start()

    async def main():
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(tmp_path / "user.sock"))
        listener.listen()
        handler = proxy.Handler(str(tmp_path / "dockerd.sock"), policy.Context("10.213.0.128/25"))
        server = await proxy.serve_socket(handler, listener)
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "user.sock"))
        writer.write(b"POST /v1.41/containers/x/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: d\r\n"
                     b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"stdin nobody reads\n")
        try:
            rest = await asyncio.wait_for(reader.read(-1), 3)
        finally:
            writer.close()
            server.close()
            for task in list(handler.tasks):
                task.cancel()
        return rest
    assert asyncio.run(main()) == b"bye\n"
