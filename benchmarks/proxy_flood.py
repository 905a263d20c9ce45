#!/usr/bin/env python3
"""One user's flood against another user's latency through the one policy
proxy: user A's `GET /containers/json` idle and while user B sends 8 streams
of ~1 MB many-key container-create bodies, alternated in one run; then the
proxy's RSS while B holds 256 connections with partial 1 MB bodies.

Run as root on a box with docker.io and catatonit:
    .venv/bin/python benchmarks/proxy_flood.py --rounds 3 --seconds 4
It brings two throwaway users up (`berth up`, which starts the proxy),
measures, and removes users, daemons, bridges, rules, the proxy and
/tmp/btflood* again. B's bodies name an image nobody has, so each passes
the policy and dockerd answers it itself (404) without making anything.
"""

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from proxy import pss_and_rss  # noqa: E402
from scratch import Scratch  # noqa: E402

from berth.proxy import control as proxyctl  # noqa: E402

LIST = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"


def many_key_body(limit=(1 << 20) - 64):
    """A create body just under the proxy's 1 MiB, nearly all of it label keys (about 80,000)."""
    labels, size, i = {}, 64, 0
    while size + 16 < limit:
        key = f"l{i:07x}"
        labels[key] = ""
        size += len(key) + 6
        i += 1
    return json.dumps({"Image": "berth-flood-none:1", "Labels": labels}, separators=(",", ":")).encode()


def create_request(body):
    return (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def exchange(sock_path, request, timeout=60):
    """Send one request on a connection of its own; (status line, seconds)."""
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    answer = b"".join(chunks)
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), time.perf_counter() - t0


def flood(sock_path, stop, done):
    """One of B's streams: create requests back to back until `stop`."""
    request = create_request(many_key_body())
    while not stop.is_set():
        try:
            exchange(sock_path, request)
        except OSError:
            time.sleep(0.01)
        with done.get_lock():
            done.value += 1


def latencies(sock_path, seconds, gap=0.01):
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, took = exchange(sock_path, LIST)
        assert status.startswith("HTTP/1.1 200"), status
        out.append(took)
        time.sleep(gap)
    return out


def p90(values):
    return statistics.quantiles(values, n=10)[-1]


def hold(sock_path, count, body_bytes, sent):
    """`count` connections each with a head for a body of `body_bytes` and
    `sent` bytes of it; the sockets, and the answers some got at once."""
    head = (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % body_bytes)
    part = b'{"Image":"x","Labels":{"a":"' + b"x" * (sent - 28)
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock_path)
        s.setblocking(False)
        view = memoryview(head + part)
        deadline = time.monotonic() + 5
        while view and time.monotonic() < deadline:
            try:
                view = view[s.send(view):]
            except BlockingIOError:
                time.sleep(0.001)
        socks.append(s)
    return socks


def answers(socks):
    got = {}
    for s in socks:
        try:
            data = s.recv(4096)
        except BlockingIOError:
            data = b""
        status = data.split(b"\r\n", 1)[0].decode(errors="replace") or "(no answer: held)"
        got[status] = got.get(status, 0) + 1
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="idle/flood pairs, alternated")
    ap.add_argument("--seconds", type=float, default=4, help="A's sampling per phase")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--held", type=int, default=256)
    args = ap.parse_args()
    with Scratch("flood", "10.254.128.0/18") as s:
        a, b = s.add_user(f"btflood{s.tag}a"), s.add_user(f"btflood{s.tag}b")
        s.berth("up", a)
        s.berth("up", b)
        sock_a, sock_b = f"{s.root}/run/{a}/docker.sock", f"{s.root}/run/{b}/docker.sock"
        pid = proxyctl.ping(f"{s.root}/run")["pid"]
        body = many_key_body()
        status, took = exchange(sock_b, create_request(body))
        print(f"B's body: {len(body)} bytes, {body.count(b':') - 1} keys; one alone: {status} in {took * 1000:.0f} ms")
        latencies(sock_a, 1)  # warm
        idle, flooded, rates = [], [], []
        for _ in range(args.rounds):
            idle.append(latencies(sock_a, args.seconds))
            stop, done = multiprocessing.Event(), multiprocessing.Value("i", 0)
            streams = [multiprocessing.Process(target=flood, args=(sock_b, stop, done)) for _ in range(args.streams)]
            for p in streams:
                p.start()
            time.sleep(0.5)
            start, t0 = done.value, time.monotonic()
            flooded.append(latencies(sock_a, args.seconds))
            rates.append((done.value - start) / (time.monotonic() - t0))
            stop.set()
            for p in streams:
                p.join(60)
            time.sleep(0.5)

        rest = pss_and_rss(pid)[1]
        socks = hold(sock_b, args.held, (1 << 20) - 64, 900 << 10)
        time.sleep(2)
        held_rss = pss_and_rss(pid)[1]
        got = answers(socks)
        during = latencies(sock_a, 2)
        for sock in socks:
            sock.close()
        time.sleep(1)

    idle_p90 = statistics.median(p90(r) for r in idle)
    flood_p90 = statistics.median(p90(r) for r in flooded)
    print(f"rounds: {args.rounds} x {args.seconds:.0f} s per phase, alternated, idle first; {args.streams} streams")
    print(f"A's GET /containers/json p90: idle {idle_p90 * 1000:.1f} ms, under B's flood {flood_p90 * 1000:.1f} ms,"
          f" ratio {flood_p90 / idle_p90:.1f} (per round: "
          + ", ".join(f"{p90(i) * 1000:.1f}/{p90(f) * 1000:.1f}" for i, f in zip(idle, flooded)) + ")")
    print(f"A's p50: idle {statistics.median(statistics.median(r) for r in idle) * 1000:.1f} ms, "
          f"flood {statistics.median(statistics.median(r) for r in flooded) * 1000:.1f} ms; "
          f"B's creates answered: {statistics.median(rates):.1f}/s")
    print(f"proxy RSS: {rest / 2**20:.0f} MiB at rest, {held_rss / 2**20:.0f} MiB with B holding {args.held} "
          f"connections of 900 KiB each (+{(held_rss - rest) / 2**20:.0f} MiB); B's answers: {got}; "
          f"A's p90 meanwhile {p90(during) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
