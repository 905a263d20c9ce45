"""One user cannot slow the policy proxy for everybody (issue 19, part 5):
two users on real daemons through the one proxy; B floods it with ~1 MB
create bodies of many keys, or holds connections with partial bodies, and
A's requests go on as before. Bounds are generous (a shared, noisy box);
before proxyshare, A's p90 was 0.6-0.8 s under the flood, and B's 256
held bodies took the proxy up by 180 MiB."""

import json
import multiprocessing
import socket
import statistics
import time

import pytest

from berth.proxy import control as proxyctl
from berth.proxy import share as proxyshare

LIST = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def pair(harness):
    """Users A and B, both up in hardened mode: one proxy serves both."""
    a, b = harness.add_user(), harness.add_user()
    harness.berth("up", a)
    harness.berth("up", b)
    yield harness.sock(a), harness.sock(b), b
    harness.berth("down", a)
    harness.berth("down", b)


def many_key_body():
    """A create body just under 1 MiB, nearly all label keys (about 75,000),
    for an image nobody has: it passes the policy, and dockerd answers 404."""
    labels = {f"l{i:07x}": "" for i in range(74_000)}
    body = json.dumps({"Image": "bt-no-such-image:1", "Labels": labels}, separators=(",", ":")).encode()
    assert len(body) < 1 << 20
    return body


def create(body, length=None):
    return (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % (len(body) if length is None else length)) + body


def exchange(path, request, timeout=60):
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace"), time.perf_counter() - t0


def flood(path, stop, answers):
    request = create(many_key_body())
    while not stop.is_set():
        answer, _ = exchange(path, request)
        if "No such image" in answer:
            with answers.get_lock():
                answers.value += 1


def p90_of_lists(path, seconds):
    took = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer, t = exchange(path, LIST)
        assert answer.startswith("HTTP/1.1 200"), answer[:200]
        took.append(t)
        time.sleep(0.01)
    return statistics.quantiles(took, n=10)[-1]


def test_a_users_requests_stay_fast_while_another_floods_the_proxy_with_big_bodies(pair):
    sock_a, sock_b, _ = pair
    idle = p90_of_lists(sock_a, 2)
    stop, answers = multiprocessing.Event(), multiprocessing.Value("i", 0)
    streams = [multiprocessing.Process(target=flood, args=(sock_b, stop, answers)) for _ in range(8)]
    for p in streams:
        p.start()
    try:
        time.sleep(0.5)
        flooded = p90_of_lists(sock_a, 4)
    finally:
        stop.set()
        for p in streams:
            p.join(120)
    # issue 19's target is 5x idle or 50 ms; this box is shared, so twice that
    assert flooded <= max(10 * idle, 0.1), f"A's p90: idle {idle * 1000:.1f} ms, flooded {flooded * 1000:.1f} ms"
    assert answers.value > 0  # B's creates pass, each with dockerd's own answer


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS:"))


def test_a_users_partial_bodies_are_capped_and_refused_in_words_and_the_other_user_is_unaffected(pair, harness):
    sock_a, sock_b, b = pair
    run_dir = f"{harness.root}/run"
    pid = proxyctl.ping(run_dir)["pid"]
    deadline = time.monotonic() + 10
    while proxyctl.stats(run_dir)[b]["connections"] and time.monotonic() < deadline:
        time.sleep(0.1)  # the flood's connections are gone: B has all 256 of theirs
    before = _rss(pid)
    head_and_part = create(b'{"Image":"x","Labels":{"a":"' + b"x" * (900 << 10), length=(1 << 20) - 64)
    held = []
    try:
        for _ in range(256):
            s = socket.socket(socket.AF_UNIX)
            held.append(s)
            s.connect(sock_b)
            s.settimeout(10)
            s.sendall(head_and_part)
        time.sleep(1)
        stats = proxyctl.stats(run_dir)[b]
        refused = []
        for s in held:
            s.setblocking(False)
            try:
                refused.append(s.recv(4096).decode(errors="replace"))
            except BlockingIOError:
                pass
        grown = _rss(pid) - before
        assert stats.get("body_bytes", 0) <= proxyshare.RAW_CAP
        assert len(refused) >= 256 - proxyshare.RAW_CAP // (900 << 10), len(refused)
        assert all(r.startswith("HTTP/1.1 429") and "berth: your requests hold over 16 MiB of request bodies" in r
                   and "send fewer at once" in r for r in refused), refused[:1]
        assert grown < 100 << 20, f"the proxy grew {grown >> 20} MiB"  # 256 x 900 KiB held would be 225
        answer, took = exchange(sock_a, LIST)
        assert answer.startswith("HTTP/1.1 200") and took < 5
    finally:
        for s in held:
            s.close()
    # let go of: B's next create gets dockerd's own answer again
    deadline = time.monotonic() + 10
    while proxyctl.stats(run_dir)[b].get("body_bytes") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxyctl.stats(run_dir)[b].get("body_bytes") == 0
    answer, _ = exchange(sock_b, create(b'{"Image": "bt-no-such-image:1"}'))
    assert answer.startswith("HTTP/1.1 404") and "No such image" in answer, answer[:300]
