"""Hardened mode: `docker cp` on a container with bind mounts works, with
no more rights than the container's own root (or the user's).

dockerd would copy as host root, through the binds: into a colleague's
directory the user may read but not write, or out of a colleague's 0600
file inside it. berth copies a running container's files as its root, in
its namespaces; a stopped container's bind paths as the user, in the pin;
and lets dockerd copy the rest of a stopped container with its pins
unmounted. Each runs with Debian's CLI and with the newer one on PATH."""

import io
import os
import pwd
import shutil
import subprocess
import tarfile

import pytest

DEBIAN_CLI = "/usr/bin/docker"


def _clis():
    found = [DEBIAN_CLI] if os.path.exists(DEBIAN_CLI) else []
    newer = shutil.which("docker")
    if newer and os.path.realpath(newer) != os.path.realpath(DEBIAN_CLI):
        found.append(newer)
    return found


def _cli_id(cli):
    return "debian-cli" if cli == DEBIAN_CLI else "path-cli"


@pytest.fixture(scope="module", params=_clis(), ids=_cli_id)
def cli(request):
    return request.param


@pytest.fixture(scope="module")
def setup(harness):
    """user: a home with a work dir; colleague: a 0755 dir the user may
    read into but not write, holding a 0600 secret and a 0644 note."""
    user, colleague = harness.add_user(), harness.add_user()
    harness.berth("up", user)
    img = harness.import_busybox(user)
    home = pwd.getpwnam(user).pw_dir
    uid = pwd.getpwnam(user).pw_uid
    os.makedirs(f"{home}/work/sub", exist_ok=True)
    with open(f"{home}/work/sub/hello.txt", "w") as f:
        f.write("hello from the host\n")
    for d, _, files in os.walk(f"{home}/work"):
        os.chown(d, uid, -1)
        for name in files:
            os.chown(os.path.join(d, name), uid, -1)
    shared = f"{pwd.getpwnam(colleague).pw_dir}/shared"
    os.makedirs(shared, exist_ok=True)
    cuid = pwd.getpwnam(colleague).pw_uid
    for name, mode in (("secret", 0o600), ("note", 0o644)):
        with open(f"{shared}/{name}", "w") as f:
            f.write(f"colleague's {name}\n")
        os.chmod(f"{shared}/{name}", mode)
        os.chown(f"{shared}/{name}", cuid, -1)
    os.chown(shared, cuid, -1)
    os.chmod(shared, 0o755)
    yield user, img, home, shared
    harness.berth("down", user, check=False)


def run(harness, cli, user, *args, stdin=None, cwd=None, binary=False):
    """The CLI as the user, through their own socket."""
    cmd = ["runuser", "-u", user, "--", cli, "-H", f"unix://{harness.sock(user)}", *args]
    return subprocess.run(cmd, capture_output=True, input=stdin, cwd=cwd, text=not binary, timeout=120)


def user_file(user, name, text):
    """A file of the user's, where their CLI can read it (not under root's tmp)."""
    uid = pwd.getpwnam(user).pw_uid
    d = os.path.join(pwd.getpwnam(user).pw_dir, "local")
    os.makedirs(d, exist_ok=True)
    os.chown(d, uid, -1)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, -1)
    return path


def ok(r):
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def container(harness, setup, cli):
    """A running container binding the user's work dir and the colleague's shared dir."""
    user, img, home, shared = setup
    name = f"cp{os.getpid()}{_cli_id(cli)[0]}"
    ok(run(harness, cli, user, "run", "-d", "--name", name, "-v", f"{home}/work:/data", "-v", f"{shared}:/shared:ro",
           img, "sleep", "600"))
    yield name
    run(harness, cli, user, "rm", "-f", name)


def test_cp_in_and_out_of_a_running_containers_bind(harness, setup, cli, container):
    user, img, home, shared = setup
    uid = pwd.getpwnam(user).pw_uid
    local = user_file(user, "in.txt", "copied in\n")
    ok(run(harness, cli, user, "cp", str(local), f"{container}:/data/sub/"))
    landed = f"{home}/work/sub/in.txt"
    assert open(landed).read() == "copied in\n"
    out = ok(run(harness, cli, user, "cp", f"{container}:/data/sub", "-", binary=True)).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as t:
        names = set(t.getnames())
        assert {"sub", "sub/hello.txt", "sub/in.txt"} <= names and all(n.startswith("sub") for n in names), names
        assert t.extractfile("sub/hello.txt").read() == b"hello from the host\n"
    # the rest of the container's files, as ever
    ok(run(harness, cli, user, "cp", str(local), f"{container}:/tmp/"))
    assert ok(run(harness, cli, user, "exec", container, "cat", "/tmp/in.txt")).stdout == "copied in\n"
    # owned alike, by berth's copy and by dockerd's (the tar's ids, mapped as the container's)
    owners = ok(run(harness, cli, user, "exec", container, "busybox", "stat", "-c", "%u:%g %a", "/data/sub/in.txt",
                    "/tmp/in.txt")).stdout.split("\n")
    assert owners[0] == owners[1] and owners[0].startswith(f"{uid}:"), owners


def test_cp_reaches_no_more_than_the_containers_root(harness, setup, cli, container):
    user, img, home, shared = setup
    # readable to the user's shell: readable by copy
    assert ok(run(harness, cli, user, "cp", f"{container}:/shared/note", "-", binary=True)).stdout
    # the colleague's 0600 file: dockerd, as root, would have read it
    r = run(harness, cli, user, "cp", f"{container}:/shared/secret", "-", binary=True)
    assert r.returncode != 0 and b"colleague's secret" not in r.stdout
    assert b"permission denied" in r.stderr.lower()
    # a symlink of the container's own into the bind reads no more
    ok(run(harness, cli, user, "exec", container, "busybox", "ln", "-s", "/shared/secret", "/tmp/link"))
    r = run(harness, cli, user, "cp", "-L", f"{container}:/tmp/link", "-", binary=True)
    assert b"colleague's secret" not in r.stdout
    # nor writes where the user's shell cannot (a read-only bind, and a dir that is not theirs)
    local = user_file(user, "x.txt", "x\n")
    r = run(harness, cli, user, "cp", str(local), f"{container}:/shared/")
    assert r.returncode != 0 and not os.path.exists(f"{shared}/x.txt")


def test_cp_on_a_stopped_container(harness, setup, cli):
    """In a bind: as the user, in the pin; elsewhere: dockerd, which finds the binds empty meanwhile."""
    user, img, home, shared = setup
    uid = pwd.getpwnam(user).pw_uid
    name = f"cps{os.getpid()}{_cli_id(cli)[0]}"
    ok(run(harness, cli, user, "create", "--name", name, "-v", f"{home}/work:/data", "-v", f"{shared}:/shared",
           img, "sh", "-c", "cat /data/sub/early.txt /tmp/early.txt; ls /shared"))
    try:
        local = user_file(user, "early.txt", "before start\n")
        ok(run(harness, cli, user, "cp", str(local), f"{name}:/data/sub/"))
        assert os.stat(f"{home}/work/sub/early.txt").st_uid == uid
        ok(run(harness, cli, user, "cp", str(local), f"{name}:/tmp/"))  # dockerd's, outside the binds
        out = ok(run(harness, cli, user, "cp", f"{name}:/data/sub/hello.txt", "-", binary=True)).stdout
        assert b"hello from the host" in out
        r = run(harness, cli, user, "cp", f"{name}:/shared/secret", "-", binary=True)
        assert r.returncode != 0 and b"colleague's secret" not in r.stdout
        # the whole tree from above the binds: dockerd's, with nothing of the binds in it
        out = ok(run(harness, cli, user, "cp", f"{name}:/", "-", binary=True)).stdout
        assert b"colleague's secret" not in out and b"hello from the host" not in out
        # and the container starts with its binds in place again
        ok(run(harness, cli, user, "start", "-a", name))
        logs = ok(run(harness, cli, user, "logs", name)).stdout
        assert logs.count("before start") == 2 and "secret" in logs and "note" in logs, logs
    finally:
        run(harness, cli, user, "rm", "-f", name)
