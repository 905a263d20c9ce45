"""The conformance corpus, tier 1 (no dockerd): berth's proxy in front of a
recording stand-in. Every request the corpus says is `same` reaches the
stand-in as the client sent it, but for what the scenario declares berth
rewrites (corpus.REWRITES); every refusal is a well-formed answer with its
reason, and reaches nothing upstream."""

import asyncio
import json
import os
import re
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "corpus", "tools"))
import corpus  # noqa: E402
import standin  # noqa: E402

from berth.proxy import handler as proxy
from berth.proxy import policy  # noqa: E402

BRIDGE = "bth1000"
SCENARIOS = dict(corpus.scenarios())
# create-keys: the top-level keys clients are known to send that dockerd ignores
IGNORED_CREATE_KEYS = {"portspecs", "name", "platform"}
# Rewrites of every request on a route, declared once: every create's
# Binds become Mounts (a "Binds": null is gone too), every network is named.
ROUTE_REWRITES = {b"/containers/create": {"binds-as-mounts", "create-keys"}, b"/networks/create": {"bridge-name"}}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """(the proxy's socket, the stand-in behind it), the proxy on a loop of its own."""
    d = tmp_path_factory.mktemp("corpus")
    upstream = standin.StandIn(str(d / "dockerd.sock"))
    loop = asyncio.new_event_loop()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(d / "user.sock"))
    listener.listen(64)
    handler = proxy.Handler(upstream.server_address, policy.Context("10.213.0.128/25", ("runc",), BRIDGE))
    server = loop.run_until_complete(proxy.serve_socket(handler, listener))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield str(d / "user.sock"), upstream

    async def shut():
        server.close()
        for task in list(handler.tasks):
            task.cancel()
        await asyncio.gather(*handler.tasks, return_exceptions=True)
    asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    upstream.stop()


def fake_ids(scenario):
    names = set()
    for conn in scenario["connections"]:
        for ex in conn["exchanges"]:
            names |= {m.group(2).decode() for m in corpus.PLACEHOLDER.finditer(corpus.unb64(ex["request"]))}
    return {name: corpus.fake_id(name) for name in names}


def exchanges(scenario):
    return [(ci, ei, ex) for ci, conn in enumerate(scenario["connections"]) for ei, ex in enumerate(conn["exchanges"])]


def _marked(name):
    why = SCENARIOS[name].get("xfail")
    return pytest.param(name, marks=pytest.mark.xfail(reason=why, strict=False)) if why else name


@pytest.mark.parametrize("name", [_marked(n) for n in sorted(SCENARIOS)])
def test_scenario_through_the_proxy(proxied, name):
    listen, upstream = proxied
    scenario = SCENARIOS[name]
    ids = fake_ids(scenario)
    for conn in scenario["connections"]:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(listen)
        src = corpus.Source(sock=sock, deadline=time.monotonic() + 5)
        try:
            for ex in conn["exchanges"]:
                upstream.clear()
                request = corpus.fill(corpus.unb64(ex["request"]), ids)
                sock.sendall(request + corpus.unb64(ex.get("raw")))
                sent = corpus.read_request(corpus.Source(request))
                answers = [corpus.read_response(src, sent[0]) for _ in range(ex.get("responses", 1))]
                check(ex, sent, answers, upstream.forwarded(), request, scenario.get("rewrites", ()))
                if answers[-1] is None or answers[-1].status in (101, 403, 400) or (
                        answers[-1].get("connection") or "").lower() == "close":
                    break
        finally:
            sock.close()


def check(ex, sent, answers, forwarded, raw, scenario_rewrites=()):
    method, target, headers, body = sent
    answer = answers[0]
    where = raw.split(b"\r\n", 1)[0].decode("latin-1")[:120]
    assert answer is not None, f"{where}: no answer"
    if ex["verdict"].startswith("refuse:"):
        assert answer.status == ex.get("status", 403), f"{where}: {answer}"
        assert answer.get("content-type") == "application/json"
        if method == b"HEAD":
            assert answer.body == b"" and int(answer.get("content-length")) > 0
        else:
            message = json.loads(answer.body)["message"]
            assert message == "berth: " + ex["verdict"].removeprefix("refuse:"), message
        assert not forwarded, f"{where}: a refused request reached dockerd: {forwarded}"
        return
    assert answer.status != 403 and answer.status != 400, f"{where}: {answer.body[:300]!r}"
    if ex.get("responses", 1) > 1:  # pipelined: each reached upstream, in order
        assert len(forwarded) == len(answers) and all(a.status == 200 for a in answers)
        return
    assert forwarded, f"{where}: nothing reached dockerd"
    got = forwarded[-1]
    rewrites = set(ex.get("rewrites", ())) | set(scenario_rewrites)
    assert got.method == method
    assert _target(got.target, rewrites) == _target(target, rewrites), f"{got.target} != {target}"
    assert _headers(got.headers, rewrites) == _headers(headers, rewrites, client=True), where
    assert _body(got.body, target, rewrites) == _body(body, target, rewrites, client=True), where


def _target(target, rewrites):
    """archive-by-id, start-by-id: the container segment may be the checked id."""
    if rewrites & {"archive-by-id", "start-by-id"}:
        parts = target.split(b"/")
        if b"containers" in parts:
            parts[parts.index(b"containers") + 1] = b"<container>"
        return b"/".join(parts)
    return target


def _headers(headers, rewrites, client=False):
    """Headers but the hop-by-hop ones berth sets for dockerd itself: one
    request a connection, the body framed anew, Upgrade only on an upgrade."""
    drop = set(corpus.HOP_HEADERS)
    if "expect-answered" in rewrites:
        drop.add(b"expect")
    if b"upgrade" not in (corpus.header(headers, b"connection") or b"").lower():
        drop.add(b"upgrade")
    out = [(k.lower(), v) for k, v in headers if k.lower() not in drop]
    if not client and "host-added" in rewrites:
        out.remove((b"host", b"docker"))
    return sorted(out)  # h11 puts Host first; the order of distinct fields means nothing (RFC 9110 5.3)


def _body(body, target, rewrites, client=False):
    """The body as dockerd reads it: JSON compared as JSON (berth sends a
    body it checked re-encoded), with the declared rewrites of its route."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    path = re.sub(rb"^/v[0-9.]+", b"", target.split(b"?")[0])
    rewrites = set(rewrites) | ROUTE_REWRITES.get(path, set())
    if path == b"/containers/create" and isinstance(doc, dict):
        if "create-keys" in rewrites and client:
            doc = {k: v for k, v in doc.items() if k.casefold() not in IGNORED_CREATE_KEYS}
        host = doc.get("HostConfig")
        if "binds-as-mounts" in rewrites and isinstance(host, dict):
            binds, mounts = host.pop("Binds", None) or [], host.pop("Mounts", None) or []
            if not client:  # a host path reaches dockerd as a Mount of type bind, never as a Bind
                assert not any(b.startswith("/") for b in binds) and all(
                    m["Type"] in ("bind", "volume", "tmpfs") for m in mounts), host
            host["Targets"] = sorted([b.split(":")[1] for b in binds] + [m["Target"] for m in mounts])
    if path == b"/networks/create" and "bridge-name" in rewrites and isinstance(doc, dict):
        options = doc.pop("Options", None) or {}
        if not client:
            assert list(options) == [policy.BRIDGE_NAME_OPTION] and options[policy.BRIDGE_NAME_OPTION].startswith(
                BRIDGE + "."), options
    return doc


def test_the_corpus_has_every_client_and_declares_what_it_uses():
    clients = {s["client"].split(" (")[0] for s in SCENARIOS.values()}
    assert {"docker CLI 20.10", "docker CLI 28", "docker-compose 1.29", "Docker SDK for Python", "testcontainers",
            "dockerode", "docker-java 3.3", "hand-written HTTP"} <= clients, clients
    for name, s in SCENARIOS.items():
        assert set(s.get("rewrites", ())) <= set(corpus.REWRITES), name
        for _, _, ex in exchanges(s):
            # a refusal says what was refused and what to do instead
            assert ex["verdict"] == "same" or (ex["verdict"].startswith("refuse:") and "; " in ex["verdict"]), name
