"""A user with a shell account attacks the login hook and berth's files.

Every payload leaves a marker only if it runs with euid 0, in a directory
only root can write. Logins go through a real sshd whose PAM stack is
Debian's stock sshd file with `berth install`'s block in it (conftest.Sshd).
"""

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
import time

import pytest
from conftest import DEBIAN_CLI, Login, PamService, PamSession

MARK_IF_ROOT_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    char buf[512];
    if (geteuid() != 0) return;
    int fd = open("%s", O_CREAT | O_WRONLY | O_APPEND, 0644), in = open("/proc/self/cmdline", O_RDONLY);
    ssize_t n = in >= 0 ? read(in, buf, sizeof buf) : 0;
    if (fd >= 0 && n > 0) { write(fd, buf, n); write(fd, "\n", 1); }
    if (fd >= 0) close(fd);
}
"""

MARK_IF_ROOT_PY = "import os\nif os.geteuid() == 0:\n    open({path!r}, 'w').close()\n"

CASES = ("pythonpath", "pythonhome", "pythonstartup", "ld_preload", "ld_library_path", "path",
         "berth_config", "xtables_lockfile", "pam_user")


class Attacker:
    """One user's home full of payloads, and the ~/.pam_environment lines that aim them at root."""

    def __init__(self, harness, markers, user):
        self.h, self.markers, self.user = harness, markers, user
        self.home = pwd.getpwnam(user).pw_dir
        self.lines = {}

    def marker(self, case):
        return os.path.join(self.markers, f"{self.user}-{case}")

    def write(self, rel, text, mode=0o644):
        path = os.path.join(self.home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def build(self, victim):
        py = MARK_IF_ROOT_PY
        self.write("py/sitecustomize.py", py.format(path=self.marker("pythonpath")))
        self.lines["pythonpath"] = {"PYTHONPATH": f"{self.home}/py"}
        self._python_home()
        self.write("startup.py", py.format(path=self.marker("pythonstartup")))
        self.lines["pythonstartup"] = {"PYTHONSTARTUP": f"{self.home}/startup.py"}
        self._shared_lib("lib/libmarkpre.so", "ld_preload")
        self.lines["ld_preload"] = {"LD_PRELOAD": f"{self.home}/lib/libmarkpre.so"}
        self._shared_lib("lib2/libmarkpath.so", "ld_library_path")
        self.lines["ld_library_path"] = {"LD_LIBRARY_PATH": f"{self.home}/lib2", "LD_PRELOAD": "libmarkpath.so"}
        for tool in ("dockerd", "containerd", "runc", "iptables", "ip", "umount", "modprobe", "ldconfig",
                     "systemctl", "systemd-run", "gcc", "ld"):
            real = shutil.which(tool, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            self.write(f"bin/{tool}", f"#!/bin/sh\n[ \"$(id -u)\" = 0 ] && : > {self.marker('path')}\n"
                                      f"exec {real or '/bin/false'} \"$@\"\n", 0o755)
        self.lines["path"] = {"PATH": f"{self.home}/bin:/usr/bin:/bin"}
        evil_dockerd = self.write("evil/dockerd", f"#!/bin/sh\n[ \"$(id -u)\" = 0 ] && : > "
                                                  f"{self.marker('berth_config')}\nexec dockerd \"$@\"\n", 0o755)
        with open(self.h.config) as f:
            config = f.read().replace("[daemon]\n", f'[daemon]\ndockerd = "{evil_dockerd}"\n')
        self.write("evil/berth.toml", config)
        self.lines["berth_config"] = {"BERTH_CONFIG": f"{self.home}/evil/berth.toml"}
        self.lines["xtables_lockfile"] = {"XTABLES_LOCKFILE": self.marker("xtables_lockfile")}
        self.lines["pam_user"] = {"PAM_USER": victim}
        subprocess.run(["chown", "-R", f"{self.user}:", self.home], check=True)

    def _python_home(self):
        """The real stdlib, but for a sitecustomize that marks (site itself is frozen in 3.11)."""
        stdlib = sysconfig.get_paths()["stdlib"]
        fake = os.path.join(self.home, "pyhome", "lib", os.path.basename(stdlib))
        os.makedirs(fake)
        for name in os.listdir(stdlib):
            if name != "sitecustomize.py":
                os.symlink(os.path.join(stdlib, name), os.path.join(fake, name))
        with open(os.path.join(fake, "sitecustomize.py"), "w") as f:
            f.write(MARK_IF_ROOT_PY.format(path=self.marker("pythonhome")))
        self.lines["pythonhome"] = {"PYTHONHOME": f"{self.home}/pyhome"}

    def _shared_lib(self, rel, case):
        src = self.write(rel + ".c", MARK_IF_ROOT_C % self.marker(case))
        subprocess.run(["cc", "-shared", "-fPIC", "-o", os.path.join(self.home, rel), src], check=True)

    def aim(self, cases):
        env = {"BERTH_PROBE": "seen"}  # shows pam_env did read the file
        for case in cases:
            env.update(self.lines[case])
        path = self.write(".pam_environment", "".join(f"{k} DEFAULT={v}\n" for k, v in env.items()))
        os.chown(path, pwd.getpwnam(self.user).pw_uid, -1)
        return env

    def markers_left(self):
        """{case: what ran it as root (its command line, for the .so payloads)}"""
        found = {}
        for name in sorted(os.listdir(self.markers)):
            if name.startswith(self.user + "-"):
                with open(os.path.join(self.markers, name), "rb") as f:
                    found[name[len(self.user) + 1:]] = f.read().replace(b"\0", b" ").decode(errors="replace")
        return found


@pytest.fixture(scope="module")
def markers(harness):
    d = os.path.join(harness.root, "markers")
    os.makedirs(d, mode=0o755)
    return d


def test_payloads_are_live_when_root_runs_with_them(harness, markers):
    """The control: each payload does mark when root's process takes the variable."""
    user = harness.add_user()
    a = Attacker(harness, markers, user)
    a.build(victim="root")
    for case in ("pythonpath", "pythonhome", "ld_preload", "ld_library_path"):
        env = {"PATH": "/usr/bin:/bin", **a.lines[case]}
        subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True)
        assert os.path.exists(a.marker(case)), case
        os.unlink(a.marker(case))


@pytest.mark.parametrize("cases", [(c,) for c in CASES] + [CASES], ids=[*CASES, "all-at-once"])
def test_users_variables_never_reach_root_at_login(harness, sshd, markers, cases):
    user, victim = harness.add_user(), harness.add_user()
    sshd.authorize(user)
    a = Attacker(harness, markers, user)
    a.build(victim)
    env = a.aim(cases)
    sent = {k: v for k, v in env.items() if k != "BERTH_PROBE"} if len(cases) > 1 else {}
    cold = sshd.ssh(user, DEBIAN_CLI, "info", "--format", "{{.DockerRootDir}}", env=sent)
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.strip().splitlines()[-1].startswith(f"{harness.root}/state/users/{user}/docker")
    warm = sshd.ssh(user, f"echo probe=$BERTH_PROBE; {DEBIAN_CLI} info --format ok", env=sent)
    assert warm.returncode == 0 and "probe=seen" in warm.stdout and "ok" in warm.stdout, warm.stderr
    assert a.markers_left() == {}
    assert not os.path.exists(f"{harness.root}/run/{victim}"), "nothing was done in the victim's name"
    assert harness.dockerd_pids(victim) == []
    harness.berth("down", user)


def test_a_bad_layout_that_lets_a_pam_user_through_makes_the_hook_do_nothing(harness, markers):
    """Defense in depth: where pam_env reads users' files before berth (an
    admin's hand edit), the forged PAM_USER shows up as a repeated item, and
    the hook does nothing as root, for nobody, and tells the user why."""
    user, victim = harness.add_user(), harness.add_user()
    a = Attacker(harness, markers, user)
    a.build(victim)
    a.aim(["pam_user"])
    confdir = os.path.join(harness.root, "pam.d-bad")
    os.makedirs(confdir)
    name = f"berth-bad-{harness.tag}"
    with open(os.path.join(confdir, name), "w") as f:
        f.write("auth required pam_permit.so\naccount required pam_permit.so\n"
                "session required pam_env.so readenv=0 user_readenv=1\n" + Login(harness).block)
    s = PamSession(PamService(name, confdir), user)
    try:
        assert s.open() == 0
    finally:
        s.end()
    assert any("PAM layout is unsafe" in m for m in s.messages), s.messages
    assert not os.path.exists(f"{harness.root}/run/{user}")
    assert not os.path.exists(f"{harness.root}/run/{victim}")


def run_as(user, *cmd):
    return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, text=True)


def test_other_users_can_neither_hold_berths_locks_nor_read_its_files(harness):
    a, b = harness.add_user(), harness.add_user()
    quick = harness.write_config("quick-locks.toml", lock_timeout=5)
    harness.berth("up", a, config=quick)
    root = harness.root
    locks = [f"{root}/state/lock/users/{a}.lock", f"{root}/state/lock/leases.lock", "/run/xtables.lock"]
    for path in locks:
        assert os.path.exists(path), path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        r = run_as(b, "flock", "-n", "-E", "99", path, "true")
        assert r.returncode not in (0, 99) and "Permission denied" in r.stderr, (path, r)
    private = [f"{root}/state/leases.json", f"{root}/run/{a}/daemon.json", f"{root}/run/{a}/dockerd.rec",
               f"{root}/log/berth.log", f"{root}/log/{a}.log"]
    for path in private:
        assert run_as(b, "cat", path).returncode != 0, path
    for d in (f"{root}/state", f"{root}/state/users", f"{root}/run", f"{root}/run/{a}", f"{root}/log"):
        r = run_as(b, "ls", d)
        assert r.returncode != 0 and "Permission denied" in r.stderr, d
    # not even stat: when a last logged in, or whether a's daemon runs (a's run dir: u:a:--x)
    for path in (f"{root}/run/{a}/last-active", f"{root}/run/{a}/docker.sock", f"{root}/run/{a}/sessions"):
        r = run_as(b, "stat", path)
        assert r.returncode != 0 and "Permission denied" in r.stderr, path
    assert run_as(a, "test", "-S", f"{root}/run/{a}/docker.sock").returncode == 0
    t0 = time.monotonic()
    harness.berth("down", a, config=quick)
    harness.berth("up", a, config=quick)
    assert time.monotonic() - t0 < 30
    # a's own view, without root: their row, from their socket
    mine = run_as(a, *harness.user_berth(quick), "status", "--json")
    doc = json.loads(mine.stdout)
    (row,) = doc["users"]
    lease = json.load(open(f"{root}/state/leases.json"))["leases"][a]
    assert row["user"] == a and row["state"] == "up" and row["block"] == lease["block"] and row["net_ip"]
    assert doc["summary"]["blocks_leased"] is None
    harness.berth("down", a, config=quick)


def test_nobody_and_users_above_max_uid_get_nothing(harness):
    r = harness.berth("up", "nobody", check=False)
    assert r.returncode == 1 and "above [users].max_uid = 60000" in r.stderr
    env = {"PATH": "/usr/bin:/bin", "PAM_TYPE": "open_session", "PAM_USER": "nobody"}
    hook = subprocess.run([sys.executable, "-I", "-m", "berth", "pam", "--run-dir", f"{harness.root}/run",
                           "--config", harness.config], env=env, capture_output=True, text=True)
    assert hook.returncode == 0 and hook.stdout == "" and hook.stderr == ""
    assert not os.path.exists(f"{harness.root}/run/nobody")
    assert not os.path.exists(f"{harness.root}/state/users/nobody")


def _login(harness, user):
    env = {"PATH": "/usr/bin:/bin", "PAM_TYPE": "open_session", "PAM_USER": user}
    return subprocess.run([sys.executable, "-I", "-m", "berth", "pam", "--run-dir", f"{harness.root}/run",
                           "--config", harness.config], env=env, capture_output=True, text=True, timeout=120)


def _data_root_is_whole(harness, user):
    """A running dockerd of the user stands on a data-root that exists (in
    hardened mode, its remapped store <data-root>/<uid>.<gid>)."""
    pw = pwd.getpwnam(user)
    gid = grp.getgrnam(f"berth-{pw.pw_uid}").gr_gid if harness.dockerd_pids(user) else pw.pw_gid
    store = f"{harness.root}/state/users/{user}/docker/{pw.pw_uid}.{gid}"
    for _ in harness.dockerd_pids(user):
        if not all(os.path.isdir(os.path.join(store, d)) for d in ("image", "containers")):
            return False
        if harness.docker(user, "info", "--format", "{{.DockerRootDir}}", check=False, cli=DEBIAN_CLI).returncode != 0:
            return False
    return True


def test_a_login_racing_a_purge_never_runs_on_a_deleted_data_root(harness):
    user = harness.add_user()
    for i in range(5):
        harness.berth("up", user)
        login = threading.Thread(target=lambda i=i: (time.sleep(0.05 * i), _login(harness, user)))
        login.start()
        purge = harness.berth("down", "--purge", "--yes", user, check=False)
        login.join()
        assert purge.returncode == 0, purge.stderr
        assert _data_root_is_whole(harness, user), f"round {i}: a dockerd on a deleted data-root"
    harness.berth("down", "--purge", "--yes", user)
    assert harness.berth("up", user).returncode == 0
    assert _data_root_is_whole(harness, user) and harness.dockerd_pids(user)
    harness.berth("down", user)


def shared_containerd_pid(harness):
    from berth.lifecycle import hostobjects as host
    return host.shared_containerd(harness.cfg()).running().pid


def test_down_leaves_no_mount_after_a_host_network_container(harness):
    """--net=host exists in trusted mode only (user namespaces forbid it)."""
    trusted = harness.write_config("trusted-mounts.toml", extra='[security]\nmode = "trusted"\n')
    user = harness.add_user()
    harness.berth("up", user, config=trusted)
    img = harness.import_busybox(user)
    harness.docker(user, "run", "-d", "--net=host", "--name", "hostnet", "--stop-timeout", "1", img, "sleep", "600",
                   cli=DEBIAN_CLI)  # sleep, PID 1, ignores SIGTERM: the down kills it after 1 s, not 10
    run_dir = f"{harness.root}/run/{user}"

    def mounts_below():
        """In the namespace dockerd runs in (berth's own, the shared containerd's)."""
        pid = harness.dockerd_pids(user)[0] if harness.dockerd_pids(user) else shared_containerd_pid(harness)
        with open(f"/proc/{pid}/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(run_dir + "/")]
    assert mounts_below(), "the --net=host container left no netns mount to test with"
    harness.berth("down", user, config=trusted)
    assert mounts_below() == []
    harness.berth("down", "--purge", "--yes", user, config=trusted)
    assert not os.path.exists(run_dir)
