"""The policy proxy in front of a real dockerd: the docker CLI through it,
refusals as the CLI shows them, and raw HTTP that tries to get past it."""

import asyncio
import os
import socket
import subprocess
import threading

import pytest

from berth import blocks, policy, proxy


@pytest.fixture(scope="module")
def proxied(harness):
    """A user up, and the proxy on a socket of its own in front of their dockerd."""
    user = harness.add_user()
    harness.berth("up", user)
    img = harness.import_busybox(user)
    lease_block = harness.berth("status", user, "--json").stdout
    import json
    block = json.loads(lease_block)["users"][0]["block"]
    ctx = policy.Context(user_networks=str(blocks.layout(blocks.ipaddress.IPv4Network(block)).user_pool))
    listen = os.path.join(harness.root, f"proxy-{user}.sock")
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(proxy.serve(listen, harness.sock(user), ctx))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield user, img, listen
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    harness.berth("down", user)


def docker(listen, *args, check=True, stdin=None):
    r = subprocess.run(["docker", "-H", f"unix://{listen}", *args], capture_output=True, text=True, timeout=60,
                       input=stdin)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_ps_and_run_through_the_proxy(proxied):
    _, img, listen = proxied
    assert "net" in docker(listen, "ps", "--format", "{{.Names}}").stdout.split()
    assert docker(listen, "run", "--rm", img, "echo", "through-the-proxy").stdout.strip() == "through-the-proxy"


def test_attach_with_stdin_both_ways(proxied):
    _, img, listen = proxied
    r = docker(listen, "run", "--rm", "-i", img, "sh", "-c", "read line; echo got:$line", stdin="hello\n")
    assert r.stdout.strip() == "got:hello"


def test_exec_and_cp_through_the_proxy(proxied, tmp_path):
    _, img, listen = proxied
    docker(listen, "run", "-d", "--name", "px-exec", img, "sleep", "600")
    try:
        r = docker(listen, "exec", "-i", "px-exec", "sh", "-c", "cat > /tmp/in; cat /tmp/in", stdin="data\n")
        assert r.stdout == "data\n"
        payload = tmp_path / "payload"
        payload.write_bytes(os.urandom(3 << 20))
        docker(listen, "cp", str(payload), "px-exec:/tmp/payload")
        docker(listen, "cp", "px-exec:/tmp/payload", str(tmp_path / "back"))
        assert (tmp_path / "back").read_bytes() == payload.read_bytes()
    finally:
        docker(listen, "rm", "-f", "px-exec", check=False)


@pytest.mark.parametrize("args, words", [
    (["--privileged"], "berth: --privileged; run without it"),
    (["--userns=host"], "berth: --userns=host"),
    (["--pid=host"], "berth: --pid=host"),
    (["--ipc=host"], "use --shm-size"),
    (["--cap-add", "SYS_ADMIN"], "capabilities beyond Docker's default set"),
    (["--security-opt", "seccomp=unconfined"], "seccomp"),
    (["--device", "/dev/sda"], "devices other than GPUs"),
    (["-p", "80:80"], "below 1024"),
])
def test_refusals_as_the_cli_shows_them(proxied, args, words):
    _, img, listen = proxied
    r = docker(listen, "run", "--rm", *args, img, "true", check=False)
    assert r.returncode != 0 and "Error response from daemon: berth:" in r.stderr and words in r.stderr, r.stderr


def test_a_missing_bind_source_is_not_created(proxied, harness):
    _, img, listen = proxied
    missing = os.path.join(harness.root, "never-made", "deeper")
    r = docker(listen, "run", "--rm", "-v", f"{missing}:/x", img, "true", check=False)
    assert r.returncode != 0 and "bind source path does not exist" in r.stderr
    assert not os.path.exists(os.path.dirname(missing))


def raw(listen, request):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(listen)
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def chunked(*parts):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def post(target, body, extra=b""):
    return (b"POST " + target + b" HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


@pytest.mark.parametrize("request_bytes, words", [
    (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b'{"Image": "x", "HostConfig"', b': {"Privileged": true}}'),
     "--privileged"),
    (b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
    (post(b"/containers/create", b'{"Image": "x", "hostconfig": {"privileged": true}}'), "--privileged"),
    (post(b"/containers/create", b'{"Image": "x", "HostConfig": {"PRIVILEGED": true}}'), "--privileged"),
    (post(b"/containers/create", b'{"Image": "x", "HostConfig": {"Privileged": false, "privileged": true}}'),
     "appears twice"),
    (post(b"/containers/create", b'{"Image": "x", "Labels": {"a": "' + b"x" * (1 << 20) + b'"}}'), "over"),
    (post(b"/v1.41//containers/create", b'{"Image": "x"}'), "the request path"),
    (post(b"/containers/../containers/create", b'{"Image": "x"}'), "the request path"),
    (post(b"/plugins/pull?remote=evil", b"[]"), "the plugins API"),
])
def test_raw_http_that_tries_to_get_past(proxied, request_bytes, words):
    _, _, listen = proxied
    answer = raw(listen, request_bytes)
    status = "400" if words == "400" else "403"
    assert answer.startswith(f"HTTP/1.1 {status}") and words in answer, answer[:300]


def test_a_legacy_build_streams_its_context_through(proxied, tmp_path):
    _, img, listen = proxied
    (tmp_path / "Dockerfile").write_text(f"FROM {img}\nCOPY blob /blob\nRUN wc -c /blob > /size\n")
    (tmp_path / "blob").write_bytes(os.urandom(2 << 20))
    r = subprocess.run(["docker", "-H", f"unix://{listen}", "build", "-q", "-t", "px-built", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert r.returncode == 0, r.stderr
    assert docker(listen, "run", "--rm", "px-built", "cat", "/size").stdout.split()[0] == str(2 << 20)
    r = subprocess.run(["docker", "-H", f"unix://{listen}", "build", "--network=host", "-t", "px-host",
                        str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert r.returncode != 0 and "berth: a build with --network=host" in r.stderr, r.stderr


def test_run_output_is_never_lost_over_many_runs(proxied):
    """A connection task the loop held only weakly was once collected mid-stream (~1 run in 13)."""
    _, img, listen = proxied
    for i in range(40):
        r = docker(listen, "run", "--rm", img, "echo", f"round-{i}")
        assert r.stdout.strip() == f"round-{i}", (i, r.stdout, r.stderr)
