"""The proxy asks dockerd its API version before BuildKit gets a request
(policy.asks_buildkit), in front of a stand-in for dockerd: no root needed."""

import asyncio
import json
import socket

import pytest

from berth.proxy import handler as proxy
from berth.proxy import policy, splicerelay

CTX = policy.Context("10.213.7.128/25")


async def stand_in(path, api_version, seen, driver="cgroupfs"):
    """A dockerd that answers /version and /info, and switches protocols for anything else."""
    async def serve(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b" ", 2)[:2])
        if head.startswith((b"GET /version ", b"GET /info ")):
            body = json.dumps({"ApiVersion": api_version, "CgroupDriver": driver}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
        else:  # switched: what the client sends comes back reversed, after its end
            writer.write(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
            writer.write((await reader.read(-1))[::-1])
        await writer.drain()
        writer.close()
    return await asyncio.start_unix_server(serve, path)


async def ask(tmp_path, api_version, request, driver="cgroupfs"):
    seen = []
    upstream, listen = str(tmp_path / "dockerd.sock"), str(tmp_path / "user.sock")
    dockerd = await stand_in(upstream, api_version, seen, driver)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(listen)
    sock.listen()
    server = await proxy.serve_socket(proxy.Handler(upstream, CTX), sock)
    try:
        reader, writer = await asyncio.open_unix_connection(listen)
        writer.write(request)
        writer.write_eof()  # the client's end of sending, which the raw stream passes on
        answer = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
    finally:
        server.close()
        dockerd.close()
    return answer, seen


GRPC = b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
BUILD_V2 = (b"POST /v1.41/build?remote=client-session&session=x&version=2 HTTP/1.1\r\nHost: docker\r\n"
            b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize("request_bytes", [GRPC, BUILD_V2], ids=["grpc", "build-version-2"])
def test_buildkit_on_a_dockerd_that_takes_a_builds_own_cgroup_is_refused_before_it_reaches_dockerd(
        tmp_path, request_bytes):
    answer, seen = asyncio.run(ask(tmp_path, "1.43", request_bytes))
    assert answer.startswith(b"HTTP/1.1 403"), answer
    assert b"berth: BuildKit on this dockerd (API 1.43)" in answer and b"DOCKER_BUILDKIT=0" in answer
    assert sorted(seen) == [[b"GET", b"/info"], [b"GET", b"/version"]]


def test_buildkit_on_a_dockerd_with_systemds_cgroup_driver_is_refused(tmp_path):
    answer, seen = asyncio.run(ask(tmp_path, "1.41", GRPC, driver="systemd"))
    assert answer.startswith(b"HTTP/1.1 403") and b"the systemd cgroup driver" in answer, answer
    assert [b"POST", b"/grpc"] not in seen


@pytest.mark.parametrize("threads", [splicerelay.MAX_THREADS, 0], ids=["relay-threads", "loop-relays"])
def test_buildkit_on_dockerd_20_10_goes_through_raw_both_ways(tmp_path, monkeypatch, threads):
    monkeypatch.setattr(splicerelay, "MAX_THREADS", threads)  # past the host's relay threads, the loop drives them
    stream = bytes(range(256)) * 4096  # 1 MiB after the head, spliced both ways
    answer, seen = asyncio.run(ask(tmp_path, "1.41", GRPC + stream))
    assert answer.startswith(b"HTTP/1.1 101"), answer[:200]
    assert answer.endswith(b"\r\n\r\n" + stream[::-1])
    assert sorted(seen[:2]) == [[b"GET", b"/info"], [b"GET", b"/version"]] and seen[2:] == [[b"POST", b"/grpc"]]
