"""`docker cp` on containers with bind mounts: tars as clients send them
(absolute symlinks, compressed, hard links), and copies while the proxy forks."""

import bz2
import gzip
import lzma
import os
import pwd
import shutil
import subprocess
import time

import pytest
from conftest import DEBIAN_CLI
from test_copy_binds_answers import raw, tar_of


def _clis():
    return [DEBIAN_CLI, shutil.which("docker")]


@pytest.fixture(scope="module")
def env(harness):
    a = harness.add_user()
    harness.berth("up", a)
    img = harness.import_busybox(a)
    home = pwd.getpwnam(a).pw_dir
    uid = pwd.getpwnam(a).pw_uid
    os.makedirs(f"{home}/work", exist_ok=True)
    os.chown(f"{home}/work", uid, -1)
    # a tree with an absolute symlink, as a venv or node_modules/.bin has
    src = f"{home}/tree"
    os.makedirs(f"{src}/bin", exist_ok=True)
    with open(f"{src}/bin/tool", "w") as f:
        f.write("x\n")
    if not os.path.lexists(f"{src}/bin/python"):
        os.symlink("/usr/bin/python3", f"{src}/bin/python")
    for d, dirs, files in os.walk(src):
        os.chown(d, uid, -1)
        for n in files + dirs:
            os.lchown(os.path.join(d, n), uid, -1)
    d = lambda *args, check=True: harness.docker(a, *args, check=check, cli=DEBIAN_CLI, as_user=a)  # noqa: E731
    d("run", "-d", "--name", "wb", "-v", f"{home}/work:/data", img, "sleep", "900")
    d("run", "-d", "--name", "nb", img, "sleep", "900")
    yield dict(a=a, img=img, home=home, sock=harness.sock(a), d=d, uid=uid, src=src)
    for c in ("wb", "nb"):
        d("rm", "-f", c, check=False)
    harness.berth("down", a, check=False)


@pytest.mark.parametrize("cli", _clis(), ids=["debian-cli", "path-cli"])
def test_cli_cp_tree_with_absolute_symlink(harness, env, cli):
    out = {}
    for c in ("wb", "nb"):
        r = subprocess.run(["runuser", "-u", env["a"], "--", cli, "-H", f"unix://{env['sock']}", "cp",
                            env["src"], f"{c}:/tmp/"], capture_output=True, text=True, timeout=60)
        out[c] = (r.returncode, r.stderr.strip())
    print(cli, out)
    assert out["wb"][0] == out["nb"][0] == 0, out


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_compressed_put(env, kind):
    body = tar_of(("c.txt", "file", b"compressed\n"))
    body = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](body)
    res = {c: raw(env["sock"], "PUT", f"/v1.41/containers/{c}/archive?path=/data" if c == "wb" else
                  f"/v1.41/containers/{c}/archive?path=/tmp", body)[:1] for c in ("wb", "nb")}
    print(kind, res)
    assert res["wb"] == res["nb"] == (200,), res


def test_hardlink_outside_extraction_point(env):
    """dockerd refuses a hardlink entry naming a path outside the extraction point (it is rooted there)."""
    body = tar_of(("hl", "hard", "/bin/busybox"))
    res = {c: raw(env["sock"], "PUT", f"/v1.41/containers/{c}/archive?path=/tmp", body)[0] for c in ("wb", "nb")}
    links = env["d"]("exec", "wb", "busybox", "stat", "-c", "%h", "/bin/busybox").stdout.strip()
    print(res, "links of /bin/busybox in wb:", links)
    assert res["wb"] == res["nb"] and links == "1", (res, links)


def test_head_latency_while_copies_fork(harness, env):
    """Forks of the proxy (four at a time) against another request's latency."""
    import threading
    stop = time.time() + 3
    def hammer():
        while time.time() < stop:
            raw(env["sock"], "HEAD", "/v1.41/containers/wb/archive?path=/data")
    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    lat = []
    while time.time() < stop:
        t0 = time.time()
        raw(env["sock"], "GET", "/v1.41/_ping")
        lat.append(time.time() - t0)
        time.sleep(0.05)
    for t in threads:
        t.join()
    lat.sort()
    print(f"pings {len(lat)} median {lat[len(lat) // 2] * 1000:.1f}ms "
          f"p95 {lat[int(len(lat) * .95)] * 1000:.1f}ms max {lat[-1] * 1000:.1f}ms")
