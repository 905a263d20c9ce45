"""Hardened mode: no device node a user supplies is made on the host.

dockerd extracts a user's tars as real root; the nodevices filter keeps it
(and whatever it starts) from making character or block devices, so a
user's `c 1:3` never becomes a node anyone can open, on the host or in a
container. Overlay whiteouts (0:0) are still made."""

import io
import os
import pwd
import stat
import tarfile

import pytest
from conftest import DEBIAN_CLI


@pytest.fixture(scope="module")
def hardened(harness):
    user = harness.add_user()
    harness.berth("up", user)
    img = harness.import_busybox(user)
    yield user, img
    harness.berth("down", user)


def _tar_with(path, *members):
    with tarfile.open(path, "w") as t:
        for name, kind, major, minor in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o666
            info.devmajor, info.devminor = major, minor
            data = None
            if kind == tarfile.REGTYPE:
                data = io.BytesIO(b"plain\n")
                info.size = 6
            t.addfile(info, data)
    os.chmod(path, 0o644)
    return path


def _device_nodes_below(root):
    """Character and block devices under `root` other than overlay whiteouts."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and st.st_rdev != 0:
                found.append(os.path.join(dirpath, name))
    return found


def data_root(harness, user):
    return f"{harness.root}/state/users/{user}/docker"


def test_an_imported_tar_makes_no_device_node(harness, hardened):
    user, _ = hardened
    tar = _tar_with(os.path.join(harness.root, "nodes.tar"), ("dev/mem-like", tarfile.CHRTYPE, 1, 3),
                    ("dev/disk-like", tarfile.BLKTYPE, 7, 0), ("plain", tarfile.REGTYPE, 0, 0))
    r = harness.docker(user, "import", tar, "bt-nodes:1", check=False, cli=DEBIAN_CLI)
    assert r.returncode != 0
    assert "operation not permitted" in r.stderr.lower()
    assert _device_nodes_below(data_root(harness, user)) == []


def test_a_node_copied_into_a_container_is_never_made(harness, hardened):
    user, img = hardened
    harness.docker(user, "run", "-d", "--name", "cp-target", img, "sleep", "300", cli=DEBIAN_CLI)
    try:
        tar = _tar_with(os.path.join(harness.root, "console.tar"), ("console-like", tarfile.CHRTYPE, 5, 1))
        with open(tar, "rb") as f:
            import subprocess
            r = subprocess.run([DEBIAN_CLI, "-H", f"unix://{harness.sock(user)}", "cp", "-", "cp-target:/tmp"],
                               stdin=f, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "operation not permitted" in r.stderr.lower()
        r = harness.docker(user, "exec", "cp-target", "ls", "-l", "/tmp", cli=DEBIAN_CLI)
        assert "console-like" not in r.stdout
    finally:
        harness.docker(user, "rm", "-f", "cp-target", check=False, cli=DEBIAN_CLI)
    assert _device_nodes_below(data_root(harness, user)) == []


def test_deleting_a_file_of_an_image_still_works_across_commit(harness, hardened):
    """The whiteout a commit's layer carries is a 0:0 node: still made."""
    user, img = hardened
    harness.docker(user, "run", "--name", "deleter", img, "busybox", "rm", "/bin/hostname", cli=DEBIAN_CLI)
    try:
        harness.docker(user, "commit", "deleter", "bt-deleted:1", cli=DEBIAN_CLI)
    finally:
        harness.docker(user, "rm", "-f", "deleter", check=False, cli=DEBIAN_CLI)
    r = harness.docker(user, "run", "--rm", "bt-deleted:1", "ls", "/bin", cli=DEBIAN_CLI)
    assert "hostname" not in r.stdout.split() and "sh" in r.stdout.split()


def test_the_daemon_runs_under_the_filter(harness, hardened):
    user, _ = hardened
    pid = harness.dockerd_pids(user)[0]
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    assert fields["Seccomp"].strip() == "2"  # SECCOMP_MODE_FILTER
    assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == "root"
