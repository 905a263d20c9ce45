"""A body spliced from one socket to another in the kernel, on either
event loop the proxy runs on: every byte through in order, the client's end
reported, dockerd's pace kept, descriptors given back."""

import asyncio
import os
import socket
import threading

import pytest

from berth.proxy import splicerelay

# each way a relay runs (a thread of its own; the loop, past MAX_THREADS), on each loop the proxy runs on
KINDS = [(loop, kind) for loop in ("asyncio", "uvloop") for kind in ("ThreadRelay", "LoopRelay")]


def run_on(loop_name, coro):
    run = asyncio.run if loop_name == "asyncio" else pytest.importorskip("uvloop").run
    return run(coro)


def pairs():
    """(client, the proxy's side of it), (the proxy's side to dockerd, dockerd)."""
    client, src = socket.socketpair()
    dst, daemon = socket.socketpair()
    src.setblocking(False)  # as the event loop's transports hold them
    dst.setblocking(False)
    return client, src, dst, daemon


def receive(sock, size, into):
    while size > 0 and (data := sock.recv(1 << 20)):
        into.append(data)
        size -= len(data)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


async def settled(before):
    """The open descriptors once every relay thread has closed its own."""
    for _ in range(100):
        if splicerelay.ThreadRelay.running == 0 and open_fds() == before:
            break
        await asyncio.sleep(0.02)
    return open_fds()


@pytest.mark.parametrize("loop_name, kind", KINDS)
def test_every_byte_goes_through_in_order_and_the_clients_end_is_reported(loop_name, kind):
    payload = os.urandom(8 << 20)

    async def main():
        client, src, dst, daemon = pairs()
        before = open_fds()
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        relay = getattr(splicerelay, kind)(loop, src.fileno(), dst.fileno(), ended.set_result)
        got = []
        reader = threading.Thread(target=receive, args=(daemon, len(payload), got))
        reader.start()

        def send():
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send)
        sender.start()
        error = await asyncio.wait_for(ended, 20)
        await loop.run_in_executor(None, reader.join)
        sender.join()
        relay.close()
        after = await settled(before)
        for s in (client, src, dst, daemon):
            s.close()
        return error, b"".join(got), before, after
    error, got, before, after = run_on(loop_name, main())
    assert error is None and got == payload
    assert after == before  # its duplicates and its pipe are closed


@pytest.mark.parametrize("loop_name, kind", KINDS)
def test_a_slow_dockerd_holds_the_client_back_not_the_proxys_memory(loop_name, kind):
    async def main():
        client, src, dst, daemon = pairs()
        loop = asyncio.get_running_loop()
        relay = getattr(splicerelay, kind)(loop, src.fileno(), dst.fileno(), lambda error: None)
        sent = [0]
        client.settimeout(0.5)

        def send():
            chunk = b"x" * (64 << 10)
            try:
                while sent[0] < (256 << 20):
                    sent[0] += client.send(chunk)
            except socket.timeout:
                pass  # the kernel holds the client: nobody takes more
        sender = threading.Thread(target=send)
        sender.start()
        await loop.run_in_executor(None, sender.join)
        stuck = sent[0]
        got = []
        reader = threading.Thread(target=receive, args=(daemon, stuck, got))
        reader.start()
        await loop.run_in_executor(None, reader.join)
        relay.close()
        for s in (client, src, dst, daemon):
            s.close()
        return stuck, sum(map(len, got))
    stuck, got = run_on(loop_name, main())
    # what was sent sits in socket buffers and one pipe: a few MiB, not the 256 the client had
    assert stuck < (16 << 20) and got == stuck


@pytest.mark.parametrize("loop_name, kind", KINDS)
def test_dockerd_gone_ends_the_relay_with_the_error(loop_name, kind):
    async def main():
        client, src, dst, daemon = pairs()
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        relay = getattr(splicerelay, kind)(loop, src.fileno(), dst.fileno(), ended.set_result)
        daemon.close()
        client.sendall(b"x" * 4096)
        error = await asyncio.wait_for(ended, 10)
        relay.close()
        for s in (client, src, dst):
            s.close()
        return error
    # dockerd's side: the proxy reads its answer on, rather than cutting the connection
    assert isinstance(run_on(loop_name, main()), splicerelay.DockerdGone)


@pytest.mark.parametrize("loop_name, kind", KINDS)
def test_a_relay_stopped_midway_reports_nothing_and_gives_its_descriptors_back(loop_name, kind):
    async def main():
        client, src, dst, daemon = pairs()
        before = open_fds()
        loop = asyncio.get_running_loop()
        ends = []
        relay = getattr(splicerelay, kind)(loop, src.fileno(), dst.fileno(), ends.append)
        client.sendall(b"x" * 4096)
        await asyncio.sleep(0.05)
        relay.close()  # dockerd answered: the proxy is done with it
        client.close()  # and then the client's end comes
        await asyncio.sleep(0.1)
        after = await settled(before - 1)
        got = daemon.recv(8192)
        for s in (src, dst, daemon):
            s.close()
        return ends, after, before, got
    ends, after, before, got = run_on(loop_name, main())
    assert ends == [] and after == before - 1  # the client's socket closed too
    assert got == b"x" * 4096


def test_past_max_threads_the_loop_drives_relays(monkeypatch):
    async def main():
        loop = asyncio.get_running_loop()
        client, src, dst, daemon = pairs()
        monkeypatch.setattr(splicerelay, "MAX_THREADS", 0)
        relay = splicerelay.Relay(loop, src.fileno(), dst.fileno(), lambda error: None)
        kind = type(relay).__name__
        relay.close()
        for s in (client, src, dst, daemon):
            s.close()
        return kind
    assert asyncio.run(main()) == "LoopRelay"
