"""Hardened mode: what container root's group reaches from a host shell.

Container gid 0 is a group of berth's (berth-<uid>), the way into the
user's image store, and container root can leave a setgid file of that
group in a bind-mounted home: the user's shell can then take the group.
What it reaches must give nothing their shell lacks: no container's root
filesystem (those are mounted where only root's daemons see them), and
nothing that runs setuid or opens as a device (the stores are nosuid and
nodev from the host)."""

import json
import os
import pwd
import stat
import subprocess

import pytest
from conftest import DEBIAN_CLI

RUNNER = r"""
#include <unistd.h>
int main(int argc, char **argv) { execv(argv[1], argv + 1); return 127; }
"""


@pytest.fixture(scope="module")
def holder(harness, tmp_path_factory):
    user = harness.add_user()
    harness.berth("up", user)
    img = harness.import_busybox(user)
    home = pwd.getpwnam(user).pw_dir
    src = tmp_path_factory.mktemp("runner") / "runner.c"
    src.write_text(RUNNER)
    subprocess.run(["gcc", "-O1", "-o", f"{home}/runner", str(src)], check=True)
    os.chmod(f"{home}/runner", 0o755)
    # container root: a setgid copy in the home (its group is container gid 0's),
    # and, in its own root filesystem, a copy setuid to container uid 5
    harness.docker(user, "run", "--rm", "-v", f"{home}:/h", img, "sh", "-c",
                   "cp /h/runner /h/sg && chmod 2755 /h/sg", cli=DEBIAN_CLI)
    harness.docker(user, "run", "-d", "--name", "holder", "-v", f"{home}:/h", img, "sh", "-c",
                   "cp /h/runner /tmp/su5 && chown 5 /tmp/su5 && chmod 4755 /tmp/su5 && "
                   "echo here > /tmp/in-merged && sleep 600", cli=DEBIAN_CLI)
    info = json.loads(harness.docker(user, "inspect", "holder", cli=DEBIAN_CLI).stdout)[0]
    data = info["GraphDriver"]["Data"]
    yield user, home, data["MergedDir"], data["UpperDir"]
    harness.docker(user, "rm", "-f", "holder", check=False, cli=DEBIAN_CLI)
    harness.berth("down", user, check=False)


def as_user_with_the_group(user, home, *argv):
    return subprocess.run(["runuser", "-u", user, "--", f"{home}/sg", *argv], capture_output=True, text=True)


def test_the_setgid_file_exists_as_the_red_team_made_it(holder):
    user, home, merged, upper = holder
    st = os.stat(f"{home}/sg")
    assert st.st_mode & stat.S_ISGID and st.st_uid == pwd.getpwnam(user).pw_uid


def test_a_containers_root_filesystem_is_not_there_from_the_host(holder):
    user, home, merged, upper = holder
    r = as_user_with_the_group(user, home, "/bin/ls", "-a", merged)
    assert "in-merged" not in r.stdout
    assert not os.path.exists(os.path.join(merged, "tmp", "in-merged"))  # not even for root, here


def test_a_setuid_file_in_a_store_runs_as_the_user(holder):
    user, home, merged, upper = holder
    su5 = os.path.join(upper, "tmp", "su5")
    assert os.stat(su5).st_mode & stat.S_ISUID
    r = as_user_with_the_group(user, home, su5, "/usr/bin/id", "-u")
    assert r.stdout.strip() == str(pwd.getpwnam(user).pw_uid), r.stderr


def test_a_device_node_in_a_store_does_not_open(holder):
    """A node left from before (berth no longer lets dockerd make one)."""
    user, home, merged, upper = holder
    node = os.path.join(upper, "tmp", "old-null")
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    try:
        r = as_user_with_the_group(user, home, "/bin/sh", "-c", f"echo x > {node}")
        assert r.returncode != 0 and "Permission denied" in r.stderr
    finally:
        os.unlink(node)
