"""A user's recent refusals: the ring (bounded, method and path only), its
rendering, and the proxy answering them itself, in front of no dockerd."""

import asyncio
import json
import os
import socket
import time

from berth.proxy import handler as proxy
from berth.proxy import policy, refusals


def test_the_ring_keeps_the_last_ones_only():
    ring = refusals.Ring(size=3)
    for i in range(5):
        ring.add(float(i), "POST", f"/containers/c{i}/start", 403, "what", "instead")
    assert [e["path"] for e in ring.to_json("alice")] == ["/containers/c2/start", "/containers/c3/start",
                                                         "/containers/c4/start"]
    assert refusals.KEPT == refusals.Ring().entries.maxlen


def test_the_query_is_never_kept_and_long_text_is_cut():
    ring = refusals.Ring()
    ring.add(0.0, "POST", "/build?buildargs=%7B%22TOKEN%22%3A%22s3cret%22%7D&t=x", 403, "w" * 1000, "i" * 1000)
    ring.add(0.0, "GET", "/images/" + "a" * 1000 + "/json", 403, "what", "instead")
    first, second = ring.to_json("alice")
    assert first["path"] == "/build" and "s3cret" not in json.dumps(first)
    assert len(first["what"]) == refusals.TEXT_CHARS + 3 and first["what"].endswith("...")
    assert len(second["path"]) == refusals.PATH_CHARS + 3


def test_a_message_of_berths_is_split_and_one_of_dockerds_is_not_kept():
    assert refusals.from_message("berth: a bind of /x, which your account cannot reach; bind a path you reach") == \
        ("a bind of /x, which your account cannot reach", "bind a path you reach")
    assert refusals.from_message('invalid mount config for type "bind": bind source path does not exist: /x') is None


def test_the_document_joins_users_oldest_first():
    a, b = refusals.Ring(), refusals.Ring()
    a.add(20.0, "GET", "/a", 403, "late", "x")
    b.add(10.0, "GET", "/b", 403, "early", "y")
    doc = refusals.document(a.to_json("alice") + b.to_json("bob"))
    assert doc["schema"] == 1 and doc["kept"] == refusals.KEPT
    assert [(e["user"], e["what"]) for e in doc["refusals"]] == [("bob", "early"), ("alice", "late")]


def test_rendering_says_when_what_why_and_instead():
    ring = refusals.Ring()
    ring.add(0.0, "POST", "/v1.41/session", 403, "BuildKit sessions", "build with DOCKER_BUILDKIT=0")
    text = refusals.render(refusals.document(ring.to_json("alice")), localtime=time.gmtime)
    assert text.splitlines() == ["1970-01-01 00:00:00  POST /v1.41/session  (403)",
                                 "    refused: BuildKit sessions",
                                 "    instead: build with DOCKER_BUILDKIT=0"]


def test_rendering_names_users_when_there_are_several_and_says_when_there_are_none():
    a, b = refusals.Ring(), refusals.Ring()
    a.add(0.0, "GET", "/a", 403, "w", "")
    b.add(1.0, "GET", "/b", 429, "w", "i")
    lines = refusals.render(refusals.document(a.to_json("alice") + b.to_json("bob")), localtime=time.gmtime)
    assert lines.splitlines()[0] == "1970-01-01 00:00:00  alice  GET /a  (403)"
    assert "    instead:" not in lines.splitlines()[2]  # no hint: no line for it
    assert refusals.render(refusals.document([])).startswith("no refusals kept")


# --- the proxy answers them itself ----------------------------------------------

def _exchange(sock_path, *requests):
    """Send the requests on one connection; all that comes back until the proxy closes it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(b"".join(requests))
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def _serve_and_ask(tmp_path, *requests, ring=None):
    """A proxy for alice (keeping her refusals in `ring`) in front of a
    dockerd that is not there: what it answers can only be its own."""
    ctx = policy.Context(user_networks="10.213.0.128/25", runtimes=("runc",), bridge="bth1001")
    handler = proxy.Handler(str(tmp_path / "no-dockerd.sock"), ctx, user="alice", recent=ring)
    listen = str(tmp_path / "docker.sock")

    async def main():
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(listen)
        sock.listen(8)
        sock.setblocking(False)
        server = await proxy.serve_socket(handler, sock)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, _exchange, listen, *requests)
        finally:
            server.close()
            os.unlink(listen)
    return asyncio.run(main()), handler


def _get(target, method=b"GET", last=False):
    return method + b" " + target + b" HTTP/1.1\r\nHost: docker\r\n" + \
        (b"Connection: close\r\n" if last else b"") + b"\r\n"


def test_the_proxy_keeps_a_refusal_and_answers_it_on_its_own_path(tmp_path):
    privileged = json.dumps({"Image": "x", "HostConfig": {"Privileged": True}}).encode()
    create = (b"POST /v1.41/containers/create?name=s3cret HTTP/1.1\r\nHost: docker\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(privileged), privileged))
    answer, handler = _serve_and_ask(tmp_path, create)
    assert answer.startswith(b"HTTP/1.1 403") and b"--privileged" in answer
    (kept,) = handler.recent.to_json("alice")
    assert (kept["method"], kept["path"], kept["status"]) == ("POST", "/v1.41/containers/create", 403)
    assert kept["what"] == "--privileged" and "s3cret" not in json.dumps(kept)

    # a refusal (its connection closed), then the ring read back on one connection: a HEAD, then a GET
    ring = refusals.Ring()
    _serve_and_ask(tmp_path, _get(b"/v1.41/plugins/pull?remote=evil", b"POST"), ring=ring)
    answer, handler = _serve_and_ask(tmp_path, _get(refusals.PATH.encode(), b"HEAD"),
                                     _get(refusals.PATH.encode() + b"?x=1", last=True), ring=ring)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-type: application/json" in head.lower()
    second, _, body = rest.partition(b"\r\n\r\n")  # HEAD: headers alone; then the GET's
    assert second.startswith(b"HTTP/1.1 200")
    doc = json.loads(body)
    assert [(e["method"], e["path"]) for e in doc["refusals"]] == [("POST", "/v1.41/plugins/pull")]
    assert handler.refused == 0  # asking is no refusal, and nothing went to (the missing) dockerd


def test_other_methods_and_paths_under_berths_prefix_are_the_policys(tmp_path):
    answer, handler = _serve_and_ask(tmp_path, _get(refusals.PATH.encode(), b"DELETE", last=True))
    assert answer.startswith(b"HTTP/1.1 403") and b"the Docker API the docker CLI uses" in answer
