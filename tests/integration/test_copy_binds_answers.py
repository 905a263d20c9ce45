"""`docker cp` on containers with bind mounts, as a user with a shell
attacks it (the red team's probes of the change, kept): berth's answers
against dockerd's own, a client gone mid-copy, a bind berth holds no pin
of, a copy cut short, symlinks in a bind."""

import io
import json
import os
import pwd
import re
import socket
import subprocess
import tarfile
import time

import pytest
from conftest import DEBIAN_CLI

from berth.core import paths


def raw(sock_path, method, target, body=b"", headers=(), partial=None, timeout=30):
    """One HTTP/1.1 request on a unix socket: (status, {header: value}, body).
    `partial`: send only this many body bytes, then close (a client gone)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "Connection: close"]
    if method == "PUT":
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Content-Type: application/x-tar")
    lines += [f"{k}: {v}" for k, v in headers]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    if partial is not None:
        s.sendall(body[:partial])
        s.close()
        return None
    if body:
        s.sendall(body)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except socket.timeout:
        data += b"<<TIMEOUT>>"
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    first, *hl = head.decode("latin-1").split("\r\n")
    status = int(first.split()[1]) if first.startswith("HTTP/") else 0
    hd = {}
    for line in hl:
        k, _, v = line.partition(":")
        hd[k.strip().lower()] = v.strip()
    if hd.get("transfer-encoding") == "chunked":
        out, buf = b"", rest
        while buf:
            size, _, buf = buf.partition(b"\r\n")
            n = int(size or b"0", 16)
            if n == 0:
                break
            out, buf = out + buf[:n], buf[n + 2:]
        rest = out
    return status, hd, rest


def tar_of(*entries):
    """entries: (name, kind, data/linkname)"""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "file":
                info.size = len(extra)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(extra))
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra
                t.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, extra
                t.addfile(info)
    return bio.getvalue()


@pytest.fixture(scope="module")
def env(harness):
    a, b = harness.add_user(), harness.add_user()
    harness.berth("up", a)
    img = harness.import_busybox(a)
    home = pwd.getpwnam(a).pw_dir
    uid = pwd.getpwnam(a).pw_uid
    for d in ("work/sub", "ro"):
        os.makedirs(f"{home}/{d}", exist_ok=True)
    for d in ("work", "work/sub", "ro"):
        os.chown(f"{home}/{d}", uid, -1)
    bhome = pwd.getpwnam(b).pw_dir
    buid = pwd.getpwnam(b).pw_uid
    os.makedirs(f"{bhome}/shared", exist_ok=True)
    with open(f"{bhome}/shared/secret", "w") as f:
        f.write("B-SECRET\n")
    os.chmod(f"{bhome}/shared/secret", 0o600)
    os.chown(f"{bhome}/shared/secret", buid, -1)
    os.chown(f"{bhome}/shared", buid, -1)
    os.chmod(f"{bhome}/shared", 0o755)
    sock = harness.sock(a)
    d = lambda *args, check=True: harness.docker(a, *args, check=check, cli=DEBIAN_CLI, as_user=a)  # noqa: E731
    d("volume", "create", "rovol")
    # running, with binds / without
    d("run", "-d", "--name", "wb", "-v", f"{home}/work:/data", "-v", f"{home}/ro:/rod:ro", img, "sleep", "900")
    d("run", "-d", "--name", "nb", "-v", "rovol:/rod:ro", img, "sleep", "900")
    # stopped, with binds / without
    d("create", "--name", "ws", "-v", f"{home}/work:/data", "-v", f"{home}/ro:/rod:ro", img, "sh", "-c",
      "ls /data /data/sub")
    d("create", "--name", "ns", "-v", "rovol:/rod:ro", img, "true")
    yield dict(a=a, b=b, img=img, home=home, bhome=bhome, sock=sock, d=d, uid=uid)
    for c in ("wb", "nb", "ws", "ns"):
        d("rm", "-f", c, check=False)
    harness.berth("down", a, check=False)


def _msg(body):
    try:
        return json.loads(body).get("message")
    except ValueError:
        return body[:200]


CASES = [
    ("HEAD", "/nonexistent", b""),  # the container named in words: normalised in _row
    ("GET", "/nonexistent", b""),
    ("GET", "/nonexistent/x", b""),
    ("PUT", "/nonexistent", tar_of(("f", "file", b"x"))),
    ("PUT", "/bin/busybox", tar_of(("f", "file", b"x"))),
    ("PUT", "/rod", tar_of(("f", "file", b"x"))),
    ("HEAD", "/bin/sh", b""),
    ("HEAD", "/bin", b""),
    ("HEAD", "/tmp/", b""),
    ("HEAD", "/bin/busybox/", b""),
    ("GET", "/bin/busybox/", b""),
    ("HEAD", "/tmp/%00x", b""),
    ("HEAD", "/tmp/%ff", b""),
    ("PUT", "/tmp", tar_of(("abs", "sym", "/etc/passwd"))),
    ("PUT", "/tmp", tar_of(("rel", "sym", "../../etc/passwd"))),
    ("PUT", "/tmp", tar_of(("../escape", "file", b"x"))),
    ("PUT", "/tmp", tar_of(("hl", "hard", "/bin/busybox"))),
    ("PUT", "/tmp&noOverwriteDirNonDir=true", tar_of(("d1", "dir", None), ("d1/x", "file", b"x"))),
    ("PUT", "/tmp&noOverwriteDirNonDir=true", tar_of(("d1", "file", b"over a dir"))),
    ("PUT", "/tmp", b"this is not a tar at all" * 40),
    ("PUT", "/tmp", b""),
]


def _row(sock, container, method, path, body):
    status, hd, out = raw(sock, method, f"/v1.41/containers/{container}/archive?path={path}", body)
    stat = hd.get("x-docker-container-path-stat")
    if stat:
        import base64
        stat = json.loads(base64.b64decode(stat))
        stat.pop("mtime", None)
    names = sorted(k for k in hd if k not in ("date",))
    message = _msg(out) if status >= 400 else None
    if isinstance(message, str):
        # Declared differences, field by field: the proxy gives dockerd the
        # container's id (its name could change hands meanwhile), so dockerd
        # names the id where berth, like dockerd's own socket, names what the
        # client named; dockerd names its host path where berth names the container's.
        message = re.sub(r"in container \S+$", "in container <the one asked for>", message)
        message = re.sub(r"lstat /\S+/merged/", "lstat /", message)
    return status, message, stat, names


@pytest.mark.parametrize("pair", [("wb", "nb"), ("ws", "ns")], ids=["running", "stopped"])
def test_answers_match_dockerd(env, pair):
    """berth's own answers (container with binds) against dockerd's (without)."""
    diffs = []
    for method, path, body in CASES:
        ours = _row(env["sock"], pair[0], method, path, body)
        theirs = _row(env["sock"], pair[1], method, path, body)
        print(f"{method} {path}\n  berth  {ours}\n  dockerd {theirs}")
        if ours != theirs:
            diffs.append((method, path, ours, theirs))
    assert not diffs, "\n".join(f"{m} {p}: berth {o} / dockerd {t}" for m, p, o, t in diffs)


def _proxy_pid(harness):
    marker = f"{harness.root}/run"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"proxy" in cmd and marker.encode() in cmd:
            return int(pid)
    return None


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=,stat=,etimes=", "--ppid", str(pid)], capture_output=True, text=True)
    return out.stdout.split("\n")


def test_put_client_gone_midbody(harness, env):
    """A PUT whose client leaves mid-body: does its child (and its slot of four) stay for ever?"""
    proxy = _proxy_pid(harness)
    before = [c for c in _children(proxy) if c.strip()]
    body = tar_of(("big", "file", b"y" * 2_000_000))
    for _ in range(5):
        raw(env["sock"], "PUT", "/v1.41/containers/wb/archive?path=/data", body, partial=1024)
    time.sleep(5)
    after = [c for c in _children(proxy) if c.strip()]
    print("children before", before, "after", after)
    r = raw(env["sock"], "HEAD", "/v1.41/containers/wb/archive?path=/data", timeout=15)
    print("a later HEAD:", r)
    assert r[0] == 200, f"a later copy hangs: {r}; children of the proxy: {after}"
    assert len(after) <= len(before), f"children left: {after}"


def test_legacy_raw_bind_on_stopped_container(harness, env):
    """A container whose bind is not a pin (made before pins, or by root on
    dockerd's own socket): the old code refused cp, the new lets dockerd copy."""
    engine = paths.in_run_dir(f"{harness.root}/run", env["a"]).engine_socket
    spec = json.dumps({"Image": env["img"], "Cmd": ["true"],
                       "HostConfig": {"Binds": [f"{env['bhome']}/shared:/shared"]}}).encode()
    s = socket.socket(socket.AF_UNIX)
    s.connect(engine)
    s.sendall(b"POST /v1.41/containers/create?name=legacy HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: " + str(len(spec)).encode() + b"\r\n\r\n" + spec)
    print(s.recv(4096))
    s.close()
    try:
        status, hd, out = raw(env["sock"], "GET", "/v1.41/containers/legacy/archive?path=/shared/secret")
        print(status, out[:300])
        assert b"B-SECRET" not in out, "dockerd copied B's 0600 file through a bind that is not a pin"
        status, hd, out = raw(env["sock"], "GET", "/v1.41/containers/legacy/archive?path=/")
        assert b"B-SECRET" not in out, "dockerd copied B's 0600 file (whole tree) through a non-pin bind"
    finally:
        env["d"]("rm", "-f", "legacy", check=False)


def test_dockerd_way_abort_leaves_pins(harness, env):
    """A dockerd copy of a stopped container cut short: the binds are back for its start."""
    home = env["home"]
    with open(f"{home}/work/sub/marker", "w") as f:
        f.write("m")
    os.chown(f"{home}/work/sub/marker", env["uid"], -1)
    body = tar_of(("big", "file", b"y" * 2_000_000))
    raw(env["sock"], "PUT", "/v1.41/containers/ws/archive?path=/tmp", body, partial=4096)
    time.sleep(2)
    r = env["d"]("start", "-a", "ws", check=False)
    print(r.stdout, r.stderr)
    assert "marker" in r.stdout, "the container started with its binds blank"


@pytest.mark.xfail(reason="declared: a stopped container's bind is copied in its pin, where an absolute "
                          "symlink resolves inside the bind, not in the container (docs/security.md)", strict=True)
def test_stopped_pin_symlink_compat(harness, env):
    """A symlink in a bind that is absolute: dockerd resolves it in the container, the pin copy in the pin."""
    home = env["home"]
    link = f"{home}/work/abs"
    if not os.path.lexists(link):
        os.symlink("/bin", link)
        os.lchown(link, env["uid"], -1)
    for c in ("wb", "ws"):
        st, hd, out = raw(env["sock"], "HEAD", f"/v1.41/containers/{c}/archive?path=/data/abs/busybox")
        print(c, st, hd.get("x-docker-container-path-stat"))
    st_run = raw(env["sock"], "HEAD", "/v1.41/containers/wb/archive?path=/data/abs/busybox")[0]
    st_stop = raw(env["sock"], "HEAD", "/v1.41/containers/ws/archive?path=/data/abs/busybox")[0]
    assert st_run == st_stop == 200, (st_run, st_stop)
