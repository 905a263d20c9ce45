"""The client's requests as llhttp parses them: heads, body data, ends, and
what comes after an upgrade request."""

import asyncio

import pytest

from berth import clientside


class Reader:
    """What a client sends, in the pieces it arrives in."""

    def __init__(self, *pieces):
        self.pieces = list(pieces)

    async def read(self, n):
        return self.pieces.pop(0) if self.pieces else b""


def events(*pieces):
    async def collect():
        client = clientside.Requests(Reader(*pieces), 1 << 20)
        out = []
        while (event := await client.next()) is not None:
            out.append(event)
        return out, client.rest
    return asyncio.run(collect())


def test_a_chunked_body_is_read_as_data_joined_and_then_its_end():
    got, rest = events(b"POST /build HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    head, data, end = got
    assert (head.method, head.target, head.version) == (b"POST", b"/build", "1.1")
    assert data == b"hello world" and end is clientside.Requests.END and rest is None
    assert clientside.has_body(head)


def test_pipelined_requests_come_one_after_another():
    got, _ = events(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nGET /info HTTP/1.1\r\nHost: d\r\n\r\n")
    assert [e.target if isinstance(e, clientside.Head) else e for e in got] == [
        b"/_ping", clientside.Requests.END, b"/info", clientside.Requests.END]


def test_an_upgrade_requests_body_comes_before_the_raw_stream():
    head = (b"POST /exec/x/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            b"Content-Length: 13\r\n\r\n")
    got, rest = events(head + b'{"Det', b'ach":1}\nstdin')
    assert got[1:] == [b'{"Det', b'ach":1}\n', clientside.Requests.END] and rest == b"stdin"


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
    from berth import proxy
    target = b"/v1.41/containers/web/archive?path=%2Fh&noOverwriteDirNonDir=true"
    assert proxy.ARCHIVE_TARGET.sub(b"/containers/" + b"a" * 64 + b"/archive", target, count=1) == \
        b"/v1.41/containers/" + b"a" * 64 + b"/archive?path=%2Fh&noOverwriteDirNonDir=true"
