"""The client's requests as llhttp parses them: heads, body data, ends, and
what comes after an upgrade request."""

import asyncio

import pytest

from berth.proxy import clientside


class Transport:
    """What asyncio's transport does for the protocol: pausing and resuming reads."""

    def __init__(self):
        self.paused = False
        self.written = []

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def is_closing(self):
        return False

    def write(self, data):
        self.written.append(data)

    def get_extra_info(self, name, default=None):
        return default  # no socket: nothing to watch for a hangup


def arrive(client, data):
    """`data` arriving as the kernel hands it over: read into the client's buffer."""
    buf = client.get_buffer(-1)
    buf[:len(data)] = data
    client.buffer_updated(len(data))


async def wants_the_body(client):
    """The proxy asks for the next event after a head (it reads the body):
    llhttp parses on from there."""
    asyncio.ensure_future(client.next())
    await asyncio.sleep(0)
    assert client._held is None


def events(*pieces):
    """The client's events for what a client sends, in the pieces it arrives in,
    and whatever it sent raw after an upgrade."""
    async def collect():
        out = []

        async def serve(client):
            while (event := await client.next()) is not None:
                out.append(b"".join(event) if isinstance(event, list) else event)
            raw = []
            while client.upgraded and (data := await client.read_raw()):
                raw.append(data)
            return b"".join(raw) if client.upgraded else None

        client = clientside.Client(serve)
        client.connection_made(Transport())
        for piece in pieces:
            await asyncio.sleep(0)
            arrive(client, piece)
        client.eof_received()
        return out, await client.task
    return asyncio.run(collect())


def test_a_chunked_body_is_read_as_data_joined_and_then_its_end():
    got, rest = events(b"POST /build HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    head, data, end = got
    assert (head.method, head.target, head.version) == (b"POST", b"/build", "1.1")
    assert data == b"hello world" and end is clientside.Client.END and rest is None
    assert clientside.has_body(head)


def test_pipelined_requests_come_one_after_another():
    got, _ = events(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nGET /info HTTP/1.1\r\nHost: d\r\n\r\n")
    assert [e.target if isinstance(e, clientside.Head) else e for e in got] == [
        b"/_ping", clientside.Client.END, b"/info", clientside.Client.END]


def test_an_upgrade_requests_body_comes_before_the_raw_stream():
    head = (b"POST /exec/x/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            b"Content-Length: 13\r\n\r\n")
    got, rest = events(head + b'{"Det', b'ach":1}\nstdin')
    assert got[1:] == [b'{"Det', b'ach":1}\n', clientside.Client.END] and rest == b"stdin"


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
])
def test_what_llhttp_will_not_read_is_a_bad_request(request_bytes):
    with pytest.raises(clientside.BadRequest):
        events(request_bytes)


def test_h11_is_fed_the_head_without_its_body():
    head = clientside.Head(b"PUT", b"/containers/x/archive?path=/", [
        (b"Host", b"d"), (b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"application/x-tar")], "1.1")
    assert clientside.bodiless_head(head) == (
        b"PUT /containers/x/archive?path=/ HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
        b"Content-Length: 0\r\n\r\n")


def test_an_archive_request_is_sent_on_by_the_id_that_was_checked():
    from berth.proxy import handler as proxy
    head = clientside.Head(b"GET", b"/v1.41/containers/web/archive?path=%2Fh&noOverwriteDirNonDir=true", [], "1.1")
    sent, refusal = proxy._by_id(head, "a" * 64)
    assert refusal is None
    assert sent.target == b"/v1.41/containers/" + b"a" * 64 + b"/archive?path=%2Fh&noOverwriteDirNonDir=true"
    start = clientside.Head(b"POST", b"/containers/web/start", [], "1.1")
    assert proxy._by_id(start, "b" * 64)[0].target == b"/containers/" + b"b" * 64 + b"/start"


@pytest.mark.parametrize("target", [
    b"/v1.41/containers/rc-plain%2Farchive?path=/d/shadow&z=/containers/q/archive",  # the red team's race
    b"/v1.41/containers/web/archiv%65?path=/", b"/v1.41/%63ontainers/web/archive?path=/",
    b"/containers/we%62/start", b"/containers/web/start?x=/containers/q/start",
])
def test_a_route_to_a_container_is_rewritten_in_its_path_or_refused(target):
    """Never in the query: a path dockerd decodes to another container's would go on by its name."""
    from berth.proxy import handler as proxy
    sent, refusal = proxy._by_id(clientside.Head(b"GET", target, [], "1.1"), "c" * 64)
    path = sent.target.partition(b"?")[0]
    assert refusal is not None or path.split(b"/")[-2] == b"c" * 64, sent.target


def test_body_data_comes_in_the_pieces_llhttp_gave_never_joined():
    async def run():
        got = []

        async def serve(client):
            got.append(await client.next())
            got.append(await client.next())

        client = clientside.Client(serve)
        client.connection_made(Transport())
        arrive(client, b"PUT /x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n2\r\nde\r\n")
        await client.task
        return got
    head, body = asyncio.run(run())
    assert body == [b"abc", b"de"]


def test_a_client_sending_faster_than_the_proxy_takes_is_no_longer_read_until_it_catches_up():
    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        transport = Transport()
        client.connection_made(transport)
        arrive(client, b"PUT /x HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
        await client.next()
        await wants_the_body(client)
        while not transport.paused:
            arrive(client, b"x" * clientside.READ_BUFFER)
        queued = client._queued
        assert clientside.HIGH < queued <= clientside.HIGH + clientside.READ_BUFFER
        while transport.paused:
            await client.next()
        assert client._queued <= clientside.LOW
    asyncio.run(run())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_real_socket_on_either_event_loop(loop, tmp_path):
    """The proxy runs on uvloop where it is installed and on plain asyncio where not."""
    import socket

    from berth.proxy import handler as proxy
    from berth.proxy import service as proxyd
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    if loop == "uvloop":
        assert proxyd._event_loop_run() is run

    async def serve(client):
        head, body = await client.next(), await client.next()
        client.write(b"HTTP/1.1 200 OK\r\nX-Body: %d\r\nContent-Length: %d\r\n\r\n%s"
                     % (sum(map(len, body)), len(head.target), head.target))
        await client.drain()
        client.close()

    async def main():
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(tmp_path / "s"))
        sock.listen()
        server = await proxy.serve_socket(serve, sock)
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s"))
        writer.write(b"PUT /x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n" + b"4000\r\n" + b"y" * 0x4000
                     + b"\r\n0\r\n\r\n")
        answer = await reader.read(-1)
        writer.close()
        server.close()
        return answer
    assert run(main()).endswith(b"X-Body: 16384\r\nContent-Length: 2\r\n\r\n/x")


def test_a_head_past_64_kib_is_a_bad_request_not_a_memory_hog():
    with pytest.raises(clientside.BadRequest, match="64 KiB"):
        events(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: d\r\n\r\n")
    with pytest.raises(clientside.BadRequest, match="64 KiB"):
        events(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(4000)) + b"\r\n")


def test_a_body_of_tiny_chunks_is_held_to_the_same_budget_as_any_other():
    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        transport = Transport()
        client.connection_made(transport)
        arrive(client, b"PUT /x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n")
        await client.next()
        await wants_the_body(client)
        sent = 0
        while not transport.paused:
            arrive(client, b"2\r\nab\r\n" * 4096)
            sent += 2 * 4096
        # each 2-byte piece counted with its overhead: paused long before HIGH bytes of data
        assert sent < clientside.HIGH // 8
    asyncio.run(run())


def held_after(*pieces):
    """(the events before the proxy asks for more, what relay_body gives)
    for a client that sends `pieces`, each a read of its own."""
    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        transport = Transport()
        client.connection_made(transport)
        for piece in pieces:
            arrive(client, piece)
        got = []
        while client.events:
            got.append(await client.next())
        return got, client.relay_body(), transport.paused
    return asyncio.run(run())


PUT = b"PUT /containers/x/archive?path=/ HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_what_follows_a_head_waits_for_the_proxy_and_can_be_relayed_unparsed():
    body = b"5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    got, held, paused = held_after(PUT + body[:9], body[9:])
    assert [e.target for e in got] == [b"/containers/x/archive?path=/"]  # no body events: llhttp stopped
    assert held == body and paused  # as it came, and the socket is read no more here


@pytest.mark.parametrize("cut", [1, 2, 3, len(PUT) - 3, len(PUT) - 2, len(PUT) - 1])
def test_a_head_cut_anywhere_by_the_reads_still_ends_where_llhttp_ends_it(cut):
    got, held, _ = held_after(PUT[:cut], PUT[cut:] + b"0\r\n\r\n")
    assert len(got) == 1 and held == b"0\r\n\r\n"


def test_empty_lines_before_a_request_line_are_not_its_end():
    got, held, _ = held_after(b"\r\n\r\n" + PUT + b"0\r\n\r\n")
    assert len(got) == 1 and held == b"0\r\n\r\n"


def test_a_request_pipelined_behind_a_body_is_never_relayed():
    first = b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}"

    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        client.connection_made(Transport())
        arrive(client, first + PUT + b"3\r\nabc\r\n0\r\n\r\n")
        events = [await client.next() for _ in range(5)]
        return events, client.relay_body()
    events, held = asyncio.run(run())
    assert [e.target if isinstance(e, clientside.Head) else e for e in events] == [
        b"/containers/create", [b"{}"], clientside.Client.END, b"/containers/x/archive?path=/", [b"abc"]]
    assert held is None  # llhttp read its body: the proxy frames it anew instead


def test_a_raw_stream_after_a_switch_keeps_what_was_held():
    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        client.connection_made(Transport())
        arrive(client, b"GET /x HTTP/1.1\r\nHost: d\r\nUpgrade: tcp\r\n\r\nraw bytes")
        await client.next()
        client.take_raw()
        return await client.read_raw()
    assert asyncio.run(run()) == b"raw bytes"


def test_llhttp_takes_crlf_line_ends_only():
    """What the head's end is found by: a bare LF anywhere in a head is a bad request."""
    for bad in (b"PUT /x HTTP/1.1\nHost: d\r\n\r\n", b"PUT /x HTTP/1.1\r\nHost: d\n\r\n",
                b"PUT /x HTTP/1.1\r\nHost: d\r\n\n"):
        with pytest.raises(clientside.BadRequest):
            events(bad + b"0\r\n\r\n")


def test_a_flood_of_empty_lines_is_a_bad_request_not_a_loop_of_4_byte_heads():
    assert events(b"\r\n\r\n" + PUT + b"0\r\n\r\n")[0][0].method == b"PUT"  # a few are fine (RFC 9112)
    for flood in ([b"\r\n" * 100_000], [b"\r\n\r\n", b"\r\n", b"GET / HTTP/1.1\r\n\r\n"]):
        with pytest.raises(clientside.BadRequest, match="empty lines"):
            events(*flood)


def test_a_head_end_is_never_read_from_another_reads_leftover_bytes():
    """The shared buffer still holds whatever the last read of any connection left there."""
    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        client.connection_made(Transport())
        arrive(client, b"GET /info HTTP/1.1\r\nHost: d\r\n")
        clientside._SHARED[:4] = b"\r\n\r\n"  # another connection's read
        buf = client.get_buffer(-1)
        buf[:1] = b"\r"
        client.buffer_updated(1)  # this client sent only "\r"
        return list(client.events)
    assert asyncio.run(run()) == []


def test_many_pipelined_requests_in_one_read_are_parsed_in_linear_time():
    """What follows each head is held without copying it again: 10000 tiny
    requests in one read once took a copy of the rest of the read each."""
    import time
    one = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"

    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        client.connection_made(Transport())
        data = one * (clientside.READ_BUFFER // len(one))
        arrive(client, data)
        heads = 0
        started = time.process_time()
        while heads < len(data) // len(one):
            if isinstance(await client.next(), clientside.Head):
                heads += 1
        return heads, time.process_time() - started
    heads, spent = asyncio.run(run())
    assert heads == clientside.READ_BUFFER // len(one)
    assert spent < 2.0  # about 0.1 s; the copies made it 1.5 s more


def test_llhttps_own_upgrade_verdict_is_on_the_head():
    got, _ = events(b"GET /x HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\n\r\n",)
    assert got[0].upgrade is False  # no Upgrade header: not an upgrade, whatever Connection says
    got, _ = events(b"POST /exec/x/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                    b"Content-Length: 2\r\n\r\n{}")
    assert got[0].upgrade is True


@pytest.mark.parametrize("connection", [b"Upgrade", b"keep-alive, x-noupgrade", b"close, upgrade", b"keep-alive"])
def test_dockerd_is_told_one_request_a_connection_unless_llhttp_read_an_upgrade(connection):
    from berth.proxy import handler as proxy
    head = clientside.Head(b"PUT", b"/containers/x/archive", [
        (b"Host", b"d"), (b"Connection", connection), (b"Keep-Alive", b"timeout=5"), (b"Upgrade", b"tcp"),
        (b"Transfer-Encoding", b"chunked")], "1.1")  # llhttp: not an upgrade (or it would say so)
    headers = proxy._upstream_headers(head)
    assert [v for n, v in headers if n.lower() == b"connection"] == [b"close"]
    assert not [n for n, _ in headers if n.lower() in (b"keep-alive", b"upgrade")]
    upgrade = proxy._upstream_headers(head._replace(upgrade=True))
    assert [v for n, v in upgrade if n.lower() == b"connection"] == [b"Upgrade"]
    assert (b"Upgrade", b"tcp") in upgrade


@pytest.mark.parametrize("framing", [b"Transfer-Encoding: identity", b"Transfer-Encoding: gzip",
                                     b"Transfer-Encoding: chunked;q=1"])
def test_a_head_llhttp_refuses_for_its_framing_is_never_handed_over(framing):
    """llhttp checks a body's framing after the head's callback: the head it
    queued goes with the refusal, so the proxy answers 400 and sends nothing on."""
    async def run():
        client = clientside.Client(lambda client: asyncio.sleep(0))
        client.connection_made(Transport())
        arrive(client, b"POST /images/load HTTP/1.1\r\nHost: d\r\n" + framing + b"\r\n\r\nabc")
        with pytest.raises(clientside.BadRequest):
            await client.next()
        return client.relay_body()
    assert asyncio.run(run()) is None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_client_gone_while_not_read_is_noticed(loop, tmp_path):
    """Reading paused (bytes held back after a head), an answer pending: the
    hangup still reaches the proxy, which lets go of the request."""
    import socket

    from berth.proxy import handler as proxy
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run

    async def main():
        ended = asyncio.get_running_loop().create_future()

        async def serve(client):
            await client.next()  # a head, and a byte after it held back
            client.on_end(lambda: ended.done() or ended.set_result(client.gone()))
            await asyncio.sleep(30)  # an answer that takes its time

        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(tmp_path / "s"))
        listener.listen()
        server = await proxy.serve_socket(serve, listener)
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(tmp_path / "s"))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: d\r\n\r\nX")
        await asyncio.sleep(0.2)
        sock.close()
        gone = await asyncio.wait_for(ended, 5)
        server.close()
        return gone
    assert run(main()) is True
