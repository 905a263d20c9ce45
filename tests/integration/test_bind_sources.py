"""Hardened mode: a bind source is reached with the user's own rights.

dockerd and runc would reach it as root, so a colleague's 0700 home
guarded nothing. berth resolves every source as the user (modes, ACLs and
groups), pins what it found where only root goes, and gives dockerd the
pin: swapping a path component afterwards changes nothing."""

import json
import os
import pwd
import subprocess
import threading
import time

import pytest
from conftest import DEBIAN_CLI


@pytest.fixture(scope="module")
def pair(harness):
    """victim: a 0700 home with a 0644 file and a directory; attacker: a shell of their own."""
    victim, attacker = harness.add_user(), harness.add_user()
    for user in (victim, attacker):
        harness.berth("up", user)
    img = harness.import_busybox(attacker)
    harness.import_busybox(victim)
    home = pwd.getpwnam(victim).pw_dir
    uid = pwd.getpwnam(victim).pw_uid
    os.makedirs(f"{home}/proj", exist_ok=True)
    for path, text in ((f"{home}/secret.txt", "victim's secret\n"), (f"{home}/proj/code.py", "victim's code\n")):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
    for path in (home, f"{home}/proj", f"{home}/secret.txt", f"{home}/proj/code.py"):
        os.chown(path, uid, -1)
    os.chmod(home, 0o700)
    yield victim, attacker, img, home
    for user in (victim, attacker):
        harness.berth("down", user, check=False)


def docker(harness, user, *args, cli, check=False, timeout=60):
    """A docker CLI, run as the user, through their own socket."""
    return harness.docker(user, *args, cli=cli, check=check, as_user=user, timeout=timeout)


def _shell(user, *argv):
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True)


def test_the_attackers_shell_is_denied(pair):
    victim, attacker, img, home = pair
    r = _shell(attacker, "cat", f"{home}/secret.txt")
    assert r.returncode != 0 and "Permission denied" in r.stderr


@pytest.mark.parametrize("spec", ["-v {home}/secret.txt:/s", "-v {home}/proj:/s",
                                  "--mount type=bind,src={home}/proj,dst=/s",
                                  "--mount type=bind,src={home}/secret.txt,dst=/s,readonly"])
def test_a_colleagues_private_files_cannot_be_bound(harness, pair, spec, docker_cli):
    victim, attacker, img, home = pair
    r = docker(harness, attacker, "run", "--rm", *spec.format(home=home).split(), img,
               "sh", "-c", "cat /s /s/code.py 2>&1; ls /s", cli=docker_cli)
    assert r.returncode != 0, r.stdout
    assert "victim's" not in r.stdout
    assert "berth: a bind of " + home in r.stderr and "your account cannot reach" in r.stderr


def test_what_lies_under_roots_home_cannot_be_bound(harness, pair):
    victim, attacker, img, home = pair
    entries = sorted(os.listdir("/root"))
    if entries:
        r = docker(harness, attacker, "run", "--rm", "-v", f"/root/{entries[0]}:/r", img, "ls", "/r", cli=DEBIAN_CLI)
        assert r.returncode != 0 and f"berth: a bind of /root/{entries[0]}" in r.stderr
    # /root itself the user may stat, as from their shell; inside, its 0700 still holds
    r = docker(harness, attacker, "run", "--rm", "-v", "/root:/r", img, "ls", "/r", cli=DEBIAN_CLI)
    assert r.returncode != 0 and "Permission denied" in r.stdout + r.stderr


def test_own_files_and_acl_granted_ones_bind(harness, pair, docker_cli):
    victim, attacker, img, home = pair
    r = docker(harness, victim, "run", "--rm", "-v", f"{home}/secret.txt:/s:ro", img, "cat", "/s", cli=docker_cli)
    assert r.returncode == 0 and r.stdout == "victim's secret\n", r.stderr
    subprocess.run(["setfacl", "-m", f"u:{attacker}:x", home], check=True)
    try:
        r = docker(harness, attacker, "run", "--rm", "-v", f"{home}/secret.txt:/s", img, "cat", "/s", cli=docker_cli)
        assert r.returncode == 0 and r.stdout == "victim's secret\n", r.stderr
    finally:
        subprocess.run(["setfacl", "-b", home], check=True)


def test_inspect_shows_the_users_path_not_the_pin(harness, pair, docker_cli):
    victim, attacker, img, home = pair
    own = pwd.getpwnam(attacker).pw_dir
    r = docker(harness, attacker, "create", "--name", "shows", "-v", f"{own}:/mine", img, "true", cli=docker_cli)
    assert r.returncode == 0, r.stderr
    try:
        info = json.loads(docker(harness, attacker, "inspect", "shows", check=True, cli=docker_cli).stdout)[0]
        assert [m["Source"] for m in info["Mounts"]] == [own]
        assert [m["Source"] for m in info["HostConfig"]["Mounts"]] == [own]
        listed = docker(harness, attacker, "ps", "-a", "--filter", "name=shows", "--format", "{{.Mounts}}",
                        check=True, cli=docker_cli).stdout
        assert "pins" not in listed
        # dockerd itself holds the pin, a path only root reaches
        raw = harness.docker(attacker, "inspect", "-f", "{{range .Mounts}}{{.Source}}{{end}}", "shows",
                             cli=docker_cli).stdout
        assert raw.strip() == own  # through the proxy as root, too
    finally:
        docker(harness, attacker, "rm", "-f", "shows", cli=docker_cli)


def test_a_missing_source_is_made_as_the_user_and_not_where_they_cannot(harness, pair, docker_cli):
    victim, attacker, img, home = pair
    own = pwd.getpwnam(attacker).pw_dir
    r = docker(harness, attacker, "run", "--rm", "-v", f"{own}/new/data:/d", img, "sh", "-c", "echo x > /d/f",
               cli=docker_cli)
    assert r.returncode == 0, r.stderr
    st = os.stat(f"{own}/new/data")
    assert st.st_uid == pwd.getpwnam(attacker).pw_uid
    target = f"/etc/berth-made-{harness.tag}"
    r = docker(harness, attacker, "run", "--rm", "-v", f"{target}:/x", img, "true", cli=docker_cli)
    assert r.returncode != 0 and "you may not create" in r.stderr
    assert not os.path.exists(target)
    r = docker(harness, attacker, "run", "--rm", "--mount", f"type=bind,src={own}/absent,dst=/x", img, "true",
               cli=docker_cli)
    assert r.returncode != 0 and "bind source path does not exist" in r.stderr
    assert not os.path.exists(f"{own}/absent")


def test_selinux_relabelling_is_refused(harness, pair, docker_cli):
    victim, attacker, img, home = pair
    own = pwd.getpwnam(attacker).pw_dir
    r = docker(harness, attacker, "run", "--rm", "-v", f"{own}:/x:z", img, "true", cli=docker_cli)
    assert r.returncode != 0 and "berth: SELinux relabelling" in r.stderr


def test_a_start_rechecks_the_users_rights(harness, pair):
    victim, attacker, img, home = pair
    subprocess.run(["setfacl", "-m", f"u:{attacker}:x", home], check=True)
    try:
        r = docker(harness, attacker, "create", "--name", "later", "-v", f"{home}/secret.txt:/s", img, "cat", "/s",
                   cli=DEBIAN_CLI)
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["setfacl", "-b", home], check=True)
    try:
        r = docker(harness, attacker, "start", "-a", "later", cli=DEBIAN_CLI)
        assert r.returncode != 0 and "your account cannot reach" in r.stderr
        assert "victim's" not in r.stdout
    finally:
        docker(harness, attacker, "rm", "-f", "later", cli=DEBIAN_CLI)


def test_a_pin_outlives_a_restart_and_goes_with_its_container(harness, pair):
    victim, attacker, img, home = pair
    own = pwd.getpwnam(attacker).pw_dir
    with open(f"{own}/kept.txt", "w") as f:
        f.write("kept\n")
    r = docker(harness, attacker, "run", "--name", "again", "-v", f"{own}/kept.txt:/k", img, "cat", "/k",
               cli=DEBIAN_CLI)
    assert r.returncode == 0 and r.stdout == "kept\n", r.stderr
    r = docker(harness, attacker, "start", "-a", "again", cli=DEBIAN_CLI)
    assert r.returncode == 0 and r.stdout == "kept\n", r.stderr
    records = f"{harness.root}/state/users/{attacker}/pins"
    mounts = f"{harness.root}/run/{attacker}/pins"
    assert len(os.listdir(records)) >= 1
    # after a reboot the mounts are gone: a start pins again
    from berth.proxy import pins
    store = pins.Store(pwd.getpwnam(attacker).pw_uid, records, mounts)
    dockerd = harness.dockerd_pids(attacker)[0]
    fd = pins.mount_namespace_of(dockerd)
    try:
        pins._in_child(pins._unpin_child, fd, [store.pin_path(t) for t in store.tokens()])
    finally:
        os.close(fd)
    r = docker(harness, attacker, "start", "-a", "again", cli=DEBIAN_CLI)
    assert r.returncode == 0 and r.stdout == "kept\n", r.stderr
    docker(harness, attacker, "rm", "again", check=True, cli=DEBIAN_CLI)
    r = docker(harness, attacker, "run", "--rm", "-v", f"{own}/kept.txt:/k", img, "cat", "/k", cli=DEBIAN_CLI)
    assert r.returncode == 0  # removed by dockerd itself (auto-remove): its pin goes too
    deadline = time.monotonic() + 10
    while os.listdir(records) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.listdir(records) == [] and os.listdir(mounts) == []


def test_swapping_a_path_component_while_containers_start_never_reaches_the_colleague(harness, pair):
    """The attacker owns a directory on the path and swaps it for a symlink
    to the victim's home, over and over, while binding through it."""
    victim, attacker, img, home = pair
    own = pwd.getpwnam(attacker).pw_dir
    _shell(attacker, "mkdir", "-p", f"{own}/swap/real")
    with open(f"{own}/swap/real/secret.txt", "w") as f:
        f.write("mine\n")
    stop = threading.Event()

    def swapper():
        script = (f"cd {own}/swap; while [ ! -e stop ]; do ln -sfn real x.tmp; mv -T x.tmp x; "
                  f"ln -sfn {home} x.tmp; mv -T x.tmp x; done")
        subprocess.run(["runuser", "-u", attacker, "--", "sh", "-c", script], timeout=120)

    t = threading.Thread(target=swapper)
    t.start()
    seen = []
    try:
        for _ in range(int(os.environ.get("SWAPS", "12"))):
            r = docker(harness, attacker, "run", "--rm", "-v", f"{own}/swap/x/secret.txt:/s", img, "cat", "/s",
                       cli=DEBIAN_CLI)
            seen.append((r.returncode, r.stdout, r.stderr.strip()[-120:]))
    finally:
        stop.set()
        open(f"{own}/swap/stop", "w").close()
        t.join()
    assert all("victim's" not in out for _, out, _ in seen), seen
    assert any(out == "mine\n" for _, out, _ in seen) and any(code != 0 for code, _, _ in seen), seen


def test_a_colleagues_process_directory_cannot_be_bound_through_proc(harness, pair):
    """/proc/<pid>/cwd of the victim's process jumps past their 0700 home for root."""
    victim, attacker, img, home = pair
    sleeper = subprocess.Popen(["runuser", "-u", victim, "--", "sh", "-c", f"cd {home}/proj && exec sleep 60"])
    try:
        deadline = time.monotonic() + 5
        pid = None
        while pid is None and time.monotonic() < deadline:
            out = subprocess.run(["pgrep", "-u", victim, "-x", "sleep"], capture_output=True, text=True).stdout
            pid = int(out.split()[0]) if out.split() else None
            time.sleep(0.05)
        assert pid is not None
        for link in ("cwd", "root"):
            r = docker(harness, attacker, "run", "--rm", "-v", f"/proc/{pid}/{link}:/x", img, "sh", "-c",
                       "cat /x/code.py /x/*/*/code.py 2>/dev/null; ls /x", cli=DEBIAN_CLI)
            assert r.returncode != 0 and "victim's" not in r.stdout, (link, r.stdout, r.stderr)
            assert "your account cannot reach" in r.stderr, r.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_binds_above_the_pins_copy_none_of_them(harness, pair):
    """A bind of a directory holding the user's pins must not copy them:
    else each bind doubles the mounts every daemon's namespace holds."""
    victim, attacker, img, home = pair
    run_dir = f"{harness.root}/run/{attacker}"
    dockerd = harness.dockerd_pids(attacker)[0]

    def mounts():
        with open(f"/proc/{dockerd}/mountinfo") as f:
            return sum(1 for _ in f)
    before = mounts()
    binds = [a for i in range(12) for a in ("-v", f"{run_dir}:/m{i}")]
    r = docker(harness, attacker, "create", "--name", "doubling", *binds, img, "true", cli=DEBIAN_CLI)
    try:
        assert r.returncode == 0, r.stderr
        assert mounts() - before < 100, mounts() - before
    finally:
        docker(harness, attacker, "rm", "-f", "doubling", cli=DEBIAN_CLI)
    r = docker(harness, attacker, "create", "--name", "roots", "-v", "/:/a", "-v", "/:/b", "-v", "/:/c", img, "true",
               cli=DEBIAN_CLI)
    assert r.returncode == 0, r.stderr
    docker(harness, attacker, "rm", "-f", "roots", cli=DEBIAN_CLI)
    records = f"{harness.root}/state/users/{attacker}/pins"
    deadline = time.monotonic() + 10
    while os.listdir(records) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.listdir(records) == []


def test_a_container_that_restarts_by_itself_finds_its_binds_after_a_reboot(harness, pair):
    """dockerd restarts it before any request could pin again: up pins first."""
    from berth.core import paths
    from berth.daemon import hostns
    from berth.lifecycle import prelaunch
    from berth.proxy import pins
    victim, attacker, img, home = pair
    own = pwd.getpwnam(attacker).pw_dir
    with open(f"{own}/boot.txt", "w") as f:
        f.write("booted\n")
    # sleep, PID 1, ignores SIGTERM: the down kills it after 1 s, not 10
    r = docker(harness, attacker, "run", "-d", "--stop-timeout", "1", "--name", "always", "--restart=always", "-v",
               f"{own}/boot.txt:/b", img, "sleep", "600", cli=DEBIAN_CLI)
    assert r.returncode == 0, r.stderr
    try:
        harness.berth("down", attacker)
        # a reboot: /run is empty, so neither the pins nor the launch plan are there
        mounts = f"{harness.root}/run/{attacker}/pins"
        pins.unpin_all(mounts, hostns.berth_namespace_path(f"{harness.root}/run"))
        os.rmdir(mounts)
        os.unlink(prelaunch.path_of(paths.in_run_dir(f"{harness.root}/run", attacker)))
        harness.berth("up", attacker)
        deadline = time.monotonic() + 20
        seen = None
        while time.monotonic() < deadline:
            seen = docker(harness, attacker, "exec", "always", "cat", "/b", cli=DEBIAN_CLI)
            if seen.returncode == 0:
                break
            time.sleep(0.2)
        assert seen.stdout == "booted\n", (seen.stdout, seen.stderr)
    finally:
        docker(harness, attacker, "rm", "-f", "always", cli=DEBIAN_CLI)
