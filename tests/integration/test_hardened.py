"""Hardened mode (the default): container root is the user, on a real dockerd.

What a user tries with their own socket, and what the host sees."""

import grp
import io
import json
import os
import pwd
import subprocess
import tarfile

import pytest
from conftest import DEBIAN_CLI

from berth.daemon import subids


@pytest.fixture(scope="module")
def hardened(harness):
    """A user up in hardened mode with the busybox image, and a home to bind-mount."""
    user = harness.add_user()
    before = {path: _lines_of(path, user) for path in ("/etc/subuid", "/etc/subgid")}
    harness.berth("up", user)
    img = harness.import_busybox(user)
    yield user, img, before
    harness.berth("down", user)


def _lines_of(path, owner):
    with open(path) as f:
        return [line for line in f if line.startswith(owner + ":")]


def _docker_run(harness, user, *args):
    return harness.docker(user, "run", "--rm", *args, check=False, cli=DEBIAN_CLI)


def root_gid(user):
    """Container gid 0: the mapping account's own group, never one of the user's."""
    return grp.getgrnam(subids.account_name(pwd.getpwnam(user).pw_uid)).gr_gid


def test_container_root_is_the_user(harness, hardened):
    user, img, _ = hardened
    pw = pwd.getpwnam(user)
    r = _docker_run(harness, user, img, "sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map")
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    assert lines[0] == ["0"]
    base = lines[2][1]
    assert lines[1] == ["0", str(pw.pw_uid), "1"] and lines[2] == ["1", base, "65536"]
    assert lines[3] == ["0", str(root_gid(user)), "1"] and lines[4] == ["1", base, "65536"]
    assert int(base) >= 1_000_000_000


def test_a_colleague_in_the_same_primary_group_cannot_enter_the_image_store(harness, hardened):
    user, _, _ = hardened
    colleague = harness.add_user()  # also in `users`
    pw = pwd.getpwnam(user)
    store = f"{harness.root}/state/users/{user}/docker/{pw.pw_uid}.{root_gid(user)}"
    assert os.path.isdir(store)
    r = subprocess.run(["runuser", "-u", colleague, "--", "ls", f"{store}/overlay2"], capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_files_written_into_a_bind_mounted_home_are_the_users(harness, hardened):
    user, img, _ = hardened
    pw = pwd.getpwnam(user)
    home = pw.pw_dir
    r = _docker_run(harness, user, "-v", f"{home}:/home/me", img, "sh", "-c",
                    "echo hi > /home/me/from-root && mkdir -p /home/me/d && chmod 4755 /home/me/d")
    assert r.returncode == 0, r.stderr
    st = os.stat(os.path.join(home, "from-root"))
    assert (st.st_uid, st.st_gid) == (pw.pw_uid, root_gid(user))
    # a non-root container user is a subordinate id: never a host user's
    shared = os.path.join(harness.root, "shared")
    os.makedirs(shared, exist_ok=True)
    os.chmod(shared, 0o1777)
    r = _docker_run(harness, user, "-u", "1000", "-v", f"{shared}:/s", img, "sh", "-c",
                    "echo x > /s/by-1000; sed -n 2p /proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    base = int(r.stdout.split()[1])
    assert os.stat(os.path.join(shared, "by-1000")).st_uid == base + 999  # container uid 1 is the base


def test_the_hosts_root_filesystem_is_only_the_users_to_read(harness, hardened):
    user, img, _ = hardened
    target = f"/etc/berth-hardened-{harness.tag}"
    r = _docker_run(harness, user, "-v", "/:/host", img, "sh", "-c",
                    f"touch /host{target}; touch /host/root/x-{harness.tag}; cat /host/etc/shadow")
    assert r.returncode != 0
    assert not os.path.exists(target) and not os.path.exists(f"/root/x-{harness.tag}")
    assert "Permission denied" in r.stderr + r.stdout


def test_the_net_container_and_the_remapped_store_outlive_down_and_up(harness, hardened):
    user, img, _ = hardened
    harness.berth("down", user)
    harness.berth("up", user)
    r = harness.docker(user, "images", "--format", "{{.Repository}}:{{.Tag}}", cli=DEBIAN_CLI)
    assert img in r.stdout.split()
    r = harness.docker(user, "inspect", "-f", "{{.State.Running}}", "net", cli=DEBIAN_CLI)
    assert r.stdout.strip() == "true"
    data_root = f"{harness.root}/state/users/{user}/docker"
    assert os.path.isdir(os.path.join(data_root, f"{pwd.getpwnam(user).pw_uid}.{root_gid(user)}"))


def test_the_users_own_subordinate_lines_are_untouched_and_purge_removes_berths(harness, hardened):
    user, _, before = hardened
    for path in ("/etc/subuid", "/etc/subgid"):
        assert _lines_of(path, user) == before[path]
    uid = pwd.getpwnam(user).pw_uid
    account = subids.account_name(uid)
    assert len(_lines_of("/etc/subuid", account)) == 2
    other = harness.add_user()
    harness.berth("up", other)
    harness.berth("down", "--purge", "--yes", other)
    assert _lines_of("/etc/subuid", subids.account_name(pwd.getpwnam(other).pw_uid)) == []
    assert subprocess.run(["getent", "passwd", subids.account_name(pwd.getpwnam(other).pw_uid)],
                          capture_output=True).returncode != 0


def test_two_users_ranges_do_not_overlap(harness, hardened):
    user, _, _ = hardened
    other = harness.add_user()
    harness.berth("up", other)
    with open("/etc/subuid") as f:
        entries = subids.parse(f.read())
    ranges = [e for e in entries if e.owner in (subids.account_name(pwd.getpwnam(u).pw_uid) for u in (user, other))
              and e.count == subids.RANGE]
    assert len(ranges) == 2
    a, b = ranges
    assert a.start + a.count <= b.start or b.start + b.count <= a.start
    harness.berth("down", other)


def test_trusted_mode_is_the_seeds_root_daemon(harness):
    cfg = harness.write_config("trusted.toml", extra='[security]\nmode = "trusted"\n')
    user = harness.add_user()
    harness.berth("up", user, config=cfg)
    img = harness.import_busybox(user)
    # --privileged itself fails on this VM (its capability bounding set lacks
    # CAP_SYS_RESOURCE, which runc then cannot grant); SYS_ADMIN shows the point.
    r = harness.docker(user, "run", "--rm", "--cap-add", "SYS_ADMIN", img, "cat", "/proc/self/uid_map", cli=DEBIAN_CLI)
    assert r.stdout.split() == ["0", "0", "4294967295"]
    assert subprocess.run(["getent", "passwd", subids.account_name(pwd.getpwnam(user).pw_uid)],
                          capture_output=True).returncode != 0, "trusted mode makes no mapping account"
    harness.berth("down", user, config=cfg)


def test_a_data_root_others_cannot_pass_through_is_a_clear_error(harness):
    hidden = os.path.join(harness.root, "hidden")
    os.makedirs(hidden, mode=0o700)
    os.chmod(hidden, 0o700)
    cfg = harness.write_config("hidden.toml")
    with open(cfg) as f:
        text = f.read().replace(f'state_dir = "{harness.root}/state"', f'state_dir = "{hidden}/state"')
    with open(cfg, "w") as f:
        f.write(text)
    user = harness.add_user()
    r = harness.berth("up", user, config=cfg, check=False)
    assert r.returncode == 1 and f"chmod o+x {hidden}" in r.stderr, r.stderr
    assert harness.dockerd_pids(user) == []


def test_an_account_named_like_a_mapping_account_is_never_taken_over(harness):
    """A person (or a stale account) called berth-<uid> is not berth's: berth
    refuses to use or delete it, and never serves a user with that name."""
    user = harness.add_user()
    uid = pwd.getpwnam(user).pw_uid
    squatter = subids.account_name(uid)
    subprocess.run(["useradd", "-M", "-N", "-g", "users", squatter], check=True)
    try:
        r = harness.berth("up", user, check=False)
        assert r.returncode == 1 and f"{squatter} is not berth's mapping account" in r.stderr, r.stderr
        assert harness.dockerd_pids(user) == []
        r = harness.berth("up", squatter, check=False)
        assert r.returncode == 1 and "reserved" in r.stderr
        harness.berth("down", "--purge", "--yes", user, check=False)
        assert subprocess.run(["getent", "passwd", squatter], capture_output=True).returncode == 0
    finally:
        subprocess.run(["userdel", squatter], check=True)


def test_a_device_node_in_an_image_is_out_of_the_users_reach(harness):
    """dockerd extracts layers as root, and container root is the user: a
    device node in an image lands owned by them. The store it lands in must
    stay closed to them, even when their primary group is their own
    (useradd's default): container gid 0 is the mapping account's group."""
    name = f"bt{harness.tag}pg"
    home = f"{harness.root}/home/{name}"
    subprocess.run(["useradd", "-M", "-U", "-d", home, "-s", "/bin/sh", name], check=True)
    harness.users.append(name)
    os.makedirs(home)
    pw = pwd.getpwnam(name)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    try:
        harness.berth("up", name)
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as t:
            t.add("/bin/busybox", arcname="bin/busybox")
            node = tarfile.TarInfo("dev/node")
            node.type, node.devmajor, node.devminor, node.mode = tarfile.CHRTYPE, 1, 3, 0o600  # /dev/null's numbers
            t.addfile(node)
        # dockerd may make no device node at all (nodevices): the import is refused, nothing lands
        r = subprocess.run([DEBIAN_CLI, "-H", f"unix://{harness.sock(name)}", "import", "-", "bt-node:1"],
                           input=layer.getvalue(), capture_output=True)
        assert r.returncode != 0 and b"operation not permitted" in r.stderr.lower()
        found = subprocess.run(["find", f"{harness.root}/state/users/{name}", "-name", "node", "-path", "*diff*"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert found == []
        store = f"{harness.root}/state/users/{name}/docker/{pw.pw_uid}.{root_gid(name)}"
        r = subprocess.run(["runuser", "-u", name, "--", "ls", f"{store}/overlay2"], capture_output=True, text=True)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
        # and what container root writes into the home is still the user's own
        img = harness.import_busybox(name)
        r = harness.docker(name, "run", "--rm", "-v", f"{home}:/h", img, "sh", "-c", "touch /h/f; id -g",
                           cli=DEBIAN_CLI)
        assert r.stdout.split() == ["0"]
        st = os.stat(f"{home}/f")
        assert st.st_uid == pw.pw_uid and st.st_gid == root_gid(name) != pw.pw_gid
    finally:
        harness.berth("down", "--purge", "--yes", name, check=False)


def test_a_mode_change_waits_for_the_daemons_restart_and_says_so(harness):
    user = harness.add_user()
    trusted = harness.write_config("trusted-switch.toml", extra='[security]\nmode = "trusted"\n')
    harness.berth("up", user, config=trusted)
    r = harness.berth("up", user)  # the default config: hardened
    assert "runs in trusted mode; the config's hardened mode applies from its next start" in r.stdout
    row = json.loads(harness.berth("status", user, "--json").stdout)["users"][0]
    assert row["mode"] == "trusted"
    harness.berth("down", user)
    harness.berth("up", user)
    assert json.loads(harness.berth("status", user, "--json").stdout)["users"][0]["mode"] == "hardened"
    harness.berth("down", user)
