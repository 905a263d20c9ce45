"""Integration fixtures: real dockerd, bridges, iptables rules and users.

Everything a test makes is named with this run's tag (bridges `b<tag><uid>`,
chains `BT<TAG>-…`, users `bt<tag><letter>`, a pool no host network uses,
state under /tmp/bt…) and recorded, and the finalizers remove it all, also
when a test fails. Only processes berth started for this run's users are
stopped, found by their pid record or by this run's unique paths.
"""

import collections
import ctypes
import ctypes.util
import ipaddress
import os
import pathlib
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent

BUSYBOX = "/bin/busybox"
# Debian's docker CLI (docker.io, 20.10): every test that drives a docker
# CLI names the one it runs, never whichever `docker` comes first on PATH.
# Tests whose point is what a CLI sends run with each of DOCKER_CLIS (the
# docker_cli fixture); a CLI used only to set things up is Debian's.
DEBIAN_CLI = "/usr/bin/docker"
APPLETS = ("sh", "httpd", "wget", "timeout", "sleep", "mkdir", "echo", "cat", "true", "ip", "ls", "nc", "hostname")


def berth_package():
    import berth
    return os.path.dirname(os.path.abspath(berth.__file__))


def _reachable_by_anyone(path):
    """Every directory above `path` passable by others (o+x), and it readable or executable by them."""
    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(2, len(parts)):
        if not os.stat("/".join(parts[:i]) or "/").st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o005)


def _docker_clis():
    """[(id, path)] of the docker CLIs tests run: Debian's, and the one
    first on PATH where that is another (a newer docker-ce CLI, say), each
    named by its major version (cli20, cli28)."""
    paths = [DEBIAN_CLI] if os.path.exists(DEBIAN_CLI) else []
    on_path = shutil.which("docker")
    if on_path and not any(os.path.realpath(on_path) == os.path.realpath(p) for p in paths):
        paths.append(on_path)
    found = []
    for path in paths:
        # the client's version alone: no daemon asked (it fails on the server part, after printing it)
        version = subprocess.run([path, "-H", "unix:///nonexistent", "version", "--format", "{{.Client.Version}}"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        name = "cli" + (version.split(".")[0] or "unknown")
        found.append((name if name not in dict(found) else f"{name}-{path}", path))
    return found


DOCKER_CLIS = _docker_clis()


def _probe():
    """Why integration tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("dockerd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        return "dockerd not installed (apt-get install docker.io)"
    if not os.path.exists(DEBIAN_CLI):
        return f"Debian's docker CLI missing at {DEBIAN_CLI} (apt-get install docker.io)"
    if not os.path.exists(BUSYBOX):
        return "static busybox missing (apt-get install busybox-static)"
    name = f"btprobe{os.getpid() % 10000}"
    try:
        from berth.net import bridge
        bridge.ensure_bridge(name, "192.0.2.1/30")
        bridge.remove_bridge(name)
        import iptc
        iptc.Table(iptc.Table.NAT).refresh()
    except Exception as e:  # the probe's whole point is to turn any failure into a skip reason
        return f"cannot manage bridges or iptables here: {e}"
    return None


SKIP_REASON = _probe()


def pytest_collection_modifyitems(config, items):
    """Every test in this directory (and only those, wherever the checkout
    lies) is marked `integration`, and skipped where the probe failed."""
    for item in items:
        if pathlib.Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
            if SKIP_REASON is not None:
                item.add_marker(pytest.mark.skip(reason=f"integration: {SKIP_REASON}"))


def _become_subreaper():
    """Orphaned dockerds re-parent to us instead of an init that may never
    reap them (this VM's PID 1 does not), so we can collect their zombies."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_zombies():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _free_pool(tag_seed):
    from berth.net import bridge
    used = bridge.host_networks()
    rnd = random.Random(tag_seed)
    candidates = [ipaddress.IPv4Network(f"10.{b}.{c}.0/20") for b in range(240, 256) for c in range(0, 256, 16)]
    rnd.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /20 for the test pool")


class Harness:
    """One isolated berth installation: config, dirs, pool, names, users."""

    def __init__(self):
        self.tag = "%03x" % random.randrange(0x1000)
        self.root = tempfile.mkdtemp(prefix=f"bt{self.tag}", dir="/tmp")
        os.chmod(self.root, 0o755)
        self.pool = _free_pool(self.tag)
        self.bridge_prefix = f"b{self.tag}"
        self.chain_prefix = f"BT{self.tag.upper()}"
        self.users = []
        self.configs = []
        self.config = self.write_config("berth.toml")
        from berth.daemon import cgroups
        from berth.lifecycle import logindigest
        self.had_login_digests = os.path.isdir(logindigest.DIR)
        self.login_digests = set(os.listdir(logindigest.DIR)) if self.had_login_digests else set()
        self.berth_cgroups = [os.path.dirname(d) for d in cgroups.user_dirs("x")]
        if cgroups.v2_root():  # where users' dockerds run (each user's own is gone with `down`)
            self.berth_cgroups.append(os.path.join(cgroups.v2_root(), cgroups.DAEMONS))

    def write_config(self, name, extra="", **daemon):
        daemon = {"start_timeout": 60, "stop_timeout": 20, **daemon}
        daemon_lines = "\n".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in daemon.items())
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(f"""
[paths]
state_dir = "{self.root}/state"
run_dir = "{self.root}/run"
log_dir = "{self.root}/log"
[network]
pool = "{self.pool}"
block_prefix = 24
bridge_prefix = "{self.bridge_prefix}"
chain_prefix = "{self.chain_prefix}"
[daemon]
{daemon_lines}
{extra}
""")
        self.configs.append(path)
        return path

    def cfg(self, path=None):
        from berth.core import config
        return config.load(path or self.config)

    # --- users --------------------------------------------------------------

    def add_user(self):
        n, suffix = len(self.users), ""
        while True:  # a, b, ..., z, ba, bb, ...: letters only, short enough for any name rule
            n, digit = divmod(n, 26)
            suffix = chr(ord("a") + digit) + suffix
            if not n:
                break
        name = f"bt{self.tag}{suffix}"
        home = f"{self.root}/home/{name}"
        # Shared primary group 'users': the socket must still be theirs alone.
        subprocess.run(["useradd", "-M", "-N", "-g", "users", "-d", home, "-s", "/bin/sh", name], check=True)
        self.users.append(name)
        os.makedirs(home, mode=0o755)
        os.chown(home, pwd.getpwnam(name).pw_uid, -1)
        return name

    # --- running berth --------------------------------------------------------

    def berth(self, *args, config=None, check=True, timeout=180):
        env = dict(os.environ, BERTH_CONFIG=config or self.config)
        r = subprocess.run([sys.executable, "-m", "berth", *args], env=env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"berth {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def user_berth(self, config=None):
        """The berth command a test user can run, wherever the checkout is:
        this interpreter where anyone may reach it, else a copy of the
        package under this run's root (0755) and Debian's python3 (a clone
        in a 0700 directory, as /root is on Debian, reaches no test user).
        What a user runs of berth needs no third-party package."""
        env = ["env", f"BERTH_CONFIG={config or self.config}"]
        if _reachable_by_anyone(sys.executable) and _reachable_by_anyone(os.path.dirname(berth_package())):
            return [*env, sys.executable, "-m", "berth"]
        copy = os.path.join(self.root, "user-berth")
        if not os.path.isdir(copy):
            shutil.copytree(berth_package(), os.path.join(copy, "berth"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            for dirpath, _, filenames in os.walk(copy):
                os.chmod(dirpath, 0o755)
                for name in filenames:
                    os.chmod(os.path.join(dirpath, name), 0o644)
        return [*env, f"PYTHONPATH={copy}", "/usr/bin/python3", "-s", "-m", "berth"]

    def hook_python(self):
        """An interpreter for programs that run berth as root and as users
        alike with `python -I` (Slurm's hook wrappers): this one where anyone
        may reach it, else a venv under this run's root (0755) whose .pth
        puts user_berth's copy of the package first, then this venv's
        site-packages, which root reaches for the third-party packages and a
        test user (who needs none) does not. Like /opt/berth on a real node."""
        if _reachable_by_anyone(sys.executable) and _reachable_by_anyone(os.path.dirname(berth_package())):
            return sys.executable
        venv = os.path.join(self.root, "hook-venv")
        python = os.path.join(venv, "bin", "python3")
        if not os.path.exists(python):
            self.user_berth()  # makes the copy
            subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
            site = subprocess.run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip()
            ours = [p for p in sys.path if p.endswith("-packages") and os.path.isdir(p)]
            with open(os.path.join(site, "berth-tests.pth"), "w") as f:
                f.write("\n".join([os.path.join(self.root, "user-berth"), *ours]) + "\n")
            for dirpath, _, filenames in os.walk(venv):
                os.chmod(dirpath, 0o755)
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    if not os.path.islink(path):
                        os.chmod(path, os.stat(path).st_mode | 0o444)
        return python

    def sock(self, user):
        return f"{self.root}/run/{user}/docker.sock"

    def docker(self, user, *args, cli, check=True, as_user=None, timeout=60):
        """`cli` (a path: DEBIAN_CLI, or the docker_cli fixture's) on the user's socket."""
        cmd = [cli, "-H", f"unix://{self.sock(user)}", *args]
        if as_user:
            cmd = ["runuser", "-u", as_user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def import_busybox(self, user, tag="bt-busybox:1"):
        tar = os.path.join(self.root, "busybox.tar")
        if not os.path.exists(tar):
            with tarfile.open(tar, "w") as t:
                t.add(BUSYBOX, arcname="bin/busybox")
                for applet in APPLETS:
                    info = tarfile.TarInfo(f"bin/{applet}")
                    info.type = tarfile.SYMTYPE
                    info.linkname = "busybox"
                    t.addfile(info)
                for d in ("tmp", "www"):
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o1777
                    t.addfile(info)
        self.docker(user, "import", "-c", 'ENV PATH=/bin', "-c", 'CMD ["sh"]', tar, tag, cli=DEBIAN_CLI)
        return tag

    def dockerd_pids(self, user):
        """dockerd processes (not zombies) running with this user's daemon.json."""
        from berth.core import proc
        marker = f"{self.root}/run/{user}/daemon.json"
        out = []
        for pid in proc.pids():
            st = proc.stat(pid)
            if st and st.state != "Z" and marker in proc.cmdline(pid):
                out.append(pid)
        return out

    def crash_daemon(self, user):
        """SIGKILL the user's dockerd, as an OOM kill would, and wait till it is gone."""
        (pid,) = self.dockerd_pids(user)
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not self.dockerd_pids(user):
                return
            time.sleep(0.05)
        raise AssertionError(f"dockerd {pid} of {user} survived SIGKILL")

    def processes_of(self, user):
        """The user's daemon's processes by their command lines: dockerd and
        what names its run dir, and shims of its containerd namespace."""
        import pwd

        from berth.core import proc
        from berth.daemon import containerd
        namespaces = set(containerd.namespaces(user, pwd.getpwnam(user).pw_uid))
        return [p for p in self.leftover_processes()
                if f"/run/{user}/" in " ".join(args := proc.cmdline(p))
                or containerd.shim_namespace(args) in namespaces]

    def shared_containerd_pid(self):
        from berth.lifecycle import hostobjects as host
        rec = host.shared_containerd(self.cfg()).running()
        return rec.pid if rec else None

    def leftover_processes(self):
        from berth.core import proc
        out = []
        for pid in proc.pids():
            st = proc.stat(pid)
            if st and st.state != "Z" and any(self.root in a for a in proc.cmdline(pid)) and pid != os.getpid():
                out.append(pid)
        return out

    def rules_mentioning(self, text):
        out = subprocess.run(["iptables-legacy-save"], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if text in line]

    def wipe_rules(self):
        """What `iptables-restore` or a firewalld reload does to berth's rules."""
        for table, chain in (("filter", "FORWARD"), ("filter", "OUTPUT"), ("raw", "PREROUTING"),
                             ("nat", "POSTROUTING")):
            subprocess.run(["iptables-legacy", "-t", table, "-F", f"{self.chain_prefix}-{chain}"], check=True)

    def bridges(self):
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(self.bridge_prefix))

    # --- cleanup ----------------------------------------------------------------

    def cleanup(self):
        """Remove everything this run made; each step runs even if one fails."""
        from berth.core import paths
        from berth.lifecycle import hostobjects as host
        from berth.lifecycle.down import down
        from berth.net import bridge
        errors = []
        for user in self.users:
            for cfg_path in self.configs:
                try:
                    cfg = self.cfg(cfg_path)
                    down(cfg, user)
                except Exception as e:  # keep cleaning; report at the end
                    errors.append(f"down {user}: {e}")
            try:
                host.supervisor_for(self.cfg(), paths.for_user(self.cfg(), user)).kill_leftovers()
            except Exception as e:
                errors.append(f"leftovers {user}: {e}")
        for pid in self.leftover_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        reap_zombies()
        for name in self.bridges():
            bridge.remove_bridge(name)
        self._remove_chains()
        for user in self.users:
            # what a test ran as this user (it made them) must not keep userdel from working
            subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
            time.sleep(0.1)
            uid = pwd.getpwnam(user).pw_uid
            r = subprocess.run(["userdel", user], capture_output=True, text=True)
            if r.returncode != 0:
                errors.append(f"userdel {user}: {r.stderr.strip()}")
            try:  # hardened mode's mapping account, with its /etc/subuid and /etc/subgid lines
                from berth.daemon import userns
                userns.remove(uid, user)
            except Exception as e:
                errors.append(f"mapping account of {user}: {e}")
        self._forget_login_digests()
        from berth.daemon import cgroups
        for user in self.users:  # a daemon's cgroup that a failed start left busy until the kills above
            cgroups.remove_daemon_cgroup(user)
        for d in self.berth_cgroups:  # /sys/fs/cgroup/<hierarchy>/berth, once no user is in it (berth remakes it)
            try:
                os.rmdir(d)
            except OSError:
                pass
        self._unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            print("cleanup errors:", *errors, sep="\n  ", file=sys.stderr)

    def _forget_login_digests(self):
        """The digests the login hook left of this run's configs (in /run/berth-login)."""
        from berth.lifecycle import logindigest
        # this run's configs, and the temporary ones its tests wrote (pytest's tmp_path)
        made = {os.path.basename(logindigest.path_for(p)) for p in self.configs}
        try:
            made |= {n for n in os.listdir(logindigest.DIR)
                     if n not in self.login_digests and n.startswith("%2Ftmp%2F")}
        except FileNotFoundError:
            pass
        for name in made:
            try:
                os.unlink(os.path.join(logindigest.DIR, name))
            except FileNotFoundError:
                pass
        if not self.had_login_digests:
            try:
                os.rmdir(logindigest.DIR)
            except OSError:
                pass  # not empty: another run's, or the host's own

    def _remove_chains(self):
        import iptc
        for table_name, builtin, chain, six in (("filter", "FORWARD", f"{self.chain_prefix}-FORWARD", False),
                                                ("filter", "OUTPUT", f"{self.chain_prefix}-OUTPUT", False),
                                                ("raw", "PREROUTING", f"{self.chain_prefix}-PREROUTING", False),
                                                ("nat", "POSTROUTING", f"{self.chain_prefix}-POSTROUTING", False),
                                                ("filter", "FORWARD", f"{self.chain_prefix}-FORWARD", True),
                                                ("filter", "OUTPUT", f"{self.chain_prefix}-OUTPUT", True)):
            table = (iptc.Table6 if six else iptc.Table)(table_name)
            table.refresh()
            for r in iptc.Chain(table, builtin).rules:
                if r.target and r.target.name == chain:
                    iptc.Chain(table, builtin).delete_rule(r)
            table.refresh()
            if table.is_chain(chain):
                c = iptc.Chain(table, chain)
                c.flush()
                c.delete()

    @staticmethod
    def _unmount_below(root):
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f if line.split()[1].startswith(root + "/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def _reaper():
    if SKIP_REASON is None:
        _become_subreaper()
    yield
    reap_zombies()


@pytest.fixture(scope="session", autouse=True)
def _no_login_digests_left():
    """A login hook still finishing after its module's cleanup (an sshd
    session process outliving its test) can leave a digest of a test config,
    or the digest directory itself: none outlives the run."""
    from berth.lifecycle import logindigest

    before = set(os.listdir(logindigest.DIR)) if os.path.isdir(logindigest.DIR) else None
    yield
    try:
        names = os.listdir(logindigest.DIR)
    except FileNotFoundError:
        return
    for name in names:
        if name not in (before or ()) and name.startswith("%2Ftmp%2F"):
            os.unlink(os.path.join(logindigest.DIR, name))
    if before is None:
        try:
            os.rmdir(logindigest.DIR)
        except OSError:
            pass  # something of the host's own appeared meanwhile


@pytest.fixture(params=[path for _, path in DOCKER_CLIS], ids=[name for name, _ in DOCKER_CLIS])
def docker_cli(request):
    """Each docker CLI in turn (Debian's 20.10, and the newer one on PATH
    where there is one): for tests whose point is what a CLI does."""
    return request.param


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    try:
        # Up before any login, as after a host's first `berth up`: in this
        # process's mount namespace. A login through the test sshd (a
        # namespace of its own, for its private /etc/pam.d) would otherwise
        # start it there, on machines where PID 1's namespace cannot be
        # entered (hostns.py), and every daemon would follow it in.
        from berth.lifecycle import hostobjects as host
        host.shared_containerd(h.cfg()).ensure()
        yield h
    finally:
        h.cleanup()


class Login:
    """The login hook's lines, as `berth install` renders them for this run."""

    def __init__(self, harness, config=None):
        from berth.ops import install
        self.h = harness
        self.config = config or harness.config
        cfg = harness.cfg(self.config)
        self.env_conf = os.path.join(harness.root, "pam_env.conf")
        with open(self.env_conf, "w") as f:
            f.write(install.env_conf(cfg))
        self.block = install.pam_block(cfg, sys.executable, self.config, self.env_conf)


PamService = collections.namedtuple("PamService", "name confdir")


@pytest.fixture
def pam_service(harness):
    """A PAM service of our own (auth/account permit, berth's session lines),
    in a PAM directory of the test's own: the host's /etc/pam.d is never touched."""
    confdir = tempfile.mkdtemp(prefix="pam.d-", dir=harness.root)
    name = f"berth-test-{harness.tag}"
    with open(os.path.join(confdir, name), "w") as f:
        # Like a real service file, other session modules come before berth's.
        f.write("auth required pam_permit.so\naccount required pam_permit.so\n"
                "session required pam_permit.so\n" + Login(harness).block)
    return PamService(name, confdir)


class PamSession:
    """One PAM transaction through libpam, as python-pam binds it.

    pam_start_confdir (libpam >= 1.4) reads the service from the test's own
    directory. python-pam's authenticate(call_end=False) lets its
    conversation callback be freed when it returns, so a module that talks
    during open_session (pam_exec's stdout) would crash the process; this
    keeps it alive for the life of the handle, and collects what the modules
    say in `messages`.
    """

    def __init__(self, service, user):
        import importlib
        from ctypes import POINTER, byref, c_char_p, c_int
        pi = importlib.import_module("pam.__internals")  # a name class bodies would mangle
        self.lib = pi.PamAuthenticator()
        self.messages = []

        def converse(n, msgs, p_response, app_data):
            return pi.my_conv(n, msgs, p_response, self.lib.libc, self.messages, b"", "utf-8")
        self._callback = pi.conv_func(converse)
        self._conv = pi.PamConv(self._callback, None)
        self.handle = pi.PamHandle()
        start = ctypes.CDLL(ctypes.util.find_library("pam")).pam_start_confdir
        start.restype = c_int
        start.argtypes = [c_char_p, c_char_p, POINTER(pi.PamConv), c_char_p, POINTER(pi.PamHandle)]
        assert start(service.name.encode(), user.encode(), byref(self._conv), service.confdir.encode(),
                     byref(self.handle)) == 0
        assert self.lib.pam_authenticate(self.handle, 0) == 0
        assert self.lib.pam_acct_mgmt(self.handle, 0) == 0

    def open(self):
        return self.lib.pam_open_session(self.handle, 0)

    def close(self):
        return self.lib.pam_close_session(self.handle, 0)

    def getenv(self, key):
        value = self.lib.pam_getenv(self.handle, key.encode())
        return value.decode() if value else None

    def end(self):
        self.lib.pam_end(self.handle, 0)

def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STOCK_SSHD_PAM = os.path.join(os.path.dirname(__file__), "..", "data", "debian12-sshd.pam")


class Sshd:
    """Debian's sshd on 127.0.0.1, own config and keys, UsePAM yes.

    Its PAM directory is a private copy of the host's, mounted over
    /etc/pam.d in a mount namespace of its own, whose `sshd` is Debian's
    stock file with `berth install`'s block in it: the host's PAM files are
    never touched, even by a run that is killed. Logins (and the daemons a
    cold login starts) live in that namespace too.
    """

    def __init__(self, harness, stock=STOCK_SSHD_PAM, extra_env_lines=None):
        self.h = harness
        self.dir = tempfile.mkdtemp(prefix="ssh-", dir=harness.root)
        os.chmod(self.dir, 0o755)
        os.makedirs(os.path.join(self.dir, "keys"), mode=0o755)
        self.port = _free_port()
        for key in ("hostkey", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(self.dir, key)],
                           check=True)
        self.pam_dir = self._private_pam_dir(stock)
        self.config_path = os.path.join(self.dir, "sshd_config")
        with open(self.config_path, "w") as f:
            f.write(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.dir}/hostkey
PidFile {self.dir}/sshd.pid
UsePAM yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {self.dir}/keys/%u
StrictModes no
PermitRootLogin no
PrintMotd no
PrintLastLog no
MaxStartups 100
MaxSessions 50
LogLevel VERBOSE
AcceptEnv LANG LC_* BERTH_* PYTHON* LD_* PATH PAM_*
""")
        self.made_privsep = not os.path.isdir("/run/sshd")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.log = open(os.path.join(self.dir, "sshd.log"), "wb")
        script = (f"mount --make-rslave / && mount --bind {self.pam_dir} /etc/pam.d && "
                  f"exec /usr/sbin/sshd -D -e -f {self.config_path}")
        self.proc = subprocess.Popen(["unshare", "--mount", "--", "sh", "-c", script],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _private_pam_dir(self, stock):
        """A copy of the host's PAM dir whose sshd is `stock` + berth install."""
        root = os.path.join(self.dir, "sysroot")
        pam_dir = os.path.join(root, "etc", "pam.d")
        shutil.copytree("/etc/pam.d", pam_dir, symlinks=True)
        from berth.ops import install
        for name in os.listdir(pam_dir):  # a berth installed on the host must not run in our logins
            path = os.path.join(pam_dir, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path) as f:
                    text = f.read()
                if install.BEGIN in text:
                    with open(path, "w") as f:
                        f.write(install.strip_block(text))
        shutil.copy(stock, os.path.join(pam_dir, "sshd"))
        self.h.berth("install", "--root", root, "--python", sys.executable,
                     "--env-conf", os.path.join(self.h.root, "pam_env.conf"))
        shutil.copy(os.path.join(root, self.h.root.lstrip("/"), "pam_env.conf"),
                    os.path.join(self.h.root, "pam_env.conf"))
        return pam_dir

    def pam_file(self):
        with open(os.path.join(self.pam_dir, "sshd")) as f:
            return f.read()

    def _wait_listening(self):
        import socket
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("sshd did not start: " + open(os.path.join(self.dir, "sshd.log")).read())

    def authorize(self, user):
        with open(os.path.join(self.dir, "client.pub")) as src, \
                open(os.path.join(self.dir, "keys", user), "w") as dst:
            dst.write(src.read())

    def ssh(self, user, *command, tty=False, timeout=120, stdin=None, env=None):
        """ssh as `user`; `env` is sent (SendEnv) by a client that runs as
        that user, as an attacker's would, so its LD_PRELOAD acts on no root
        process of the test's."""
        key = os.path.join(self.dir, "client")
        prefix = []
        if env:
            key = os.path.join(self.dir, f"client-{user}")
            shutil.copy(os.path.join(self.dir, "client"), key)
            os.chown(key, pwd.getpwnam(user).pw_uid, -1)
            os.chmod(key, 0o600)
            # set only once runuser has dropped root
            prefix = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items())]
        cmd = [*prefix, "ssh", "-i", key, "-p", str(self.port),
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-F", "/dev/null"]
        for key in env or {}:
            cmd += ["-o", f"SendEnv={key}"]
        if tty:
            cmd.append("-tt")
        return subprocess.run([*cmd, f"{user}@127.0.0.1", *command], capture_output=True, text=True,
                              timeout=timeout, input=stdin if stdin is not None else "")

    def close(self):
        try:
            self.proc.terminate()
            self.proc.wait(10)
        finally:
            self.log.close()
            if self.made_privsep:
                shutil.rmtree("/run/sshd", ignore_errors=True)


@pytest.fixture(scope="module")
def sshd(harness):
    server = Sshd(harness)
    try:
        yield server
    finally:
        server.close()
