"""A throwaway berth installation for one benchmark run: its own temp root,
config, pool, bridge and chain names, and users, all removed at the end."""

import os
import shutil
import subprocess
import sys
import tempfile


class Scratch:
    def __init__(self, kind, pool, python=sys.executable, extra=""):
        self.tag = "%03x" % (os.getpid() % 4096)
        self.root = tempfile.mkdtemp(prefix=f"bt{kind}{self.tag}", dir="/tmp")
        os.chmod(self.root, 0o755)  # hardened mode: dockerd wants o+x above each data-root
        self.config = os.path.join(self.root, "berth.toml")
        with open(self.config, "w") as f:
            f.write(f'[paths]\nstate_dir = "{self.root}/state"\nrun_dir = "{self.root}/run"\n'
                    f'log_dir = "{self.root}/log"\n[network]\npool = "{pool}"\n'
                    f'bridge_prefix = "{kind[0]}{self.tag}"\nchain_prefix = "B{kind[0].upper()}{self.tag.upper()}"\n'
                    f"{extra}")
        self.env = dict(os.environ, BERTH_CONFIG=self.config)
        self.python = python
        self.users = []
        from berth.lifecycle import logindigest
        self.had_login_digests = os.path.isdir(logindigest.DIR)

    def add_user(self, name):
        subprocess.run(["useradd", "-M", "-N", "-g", "users", name], check=True)
        self.users.append(name)
        return name

    def berth(self, *args):
        r = subprocess.run([self.python, "-m", "berth", *args], env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"berth {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for user in self.users:
            # purge: the user's data and, in hardened mode, their mapping account go too
            subprocess.run([self.python, "-m", "berth", "down", "--purge", "--yes", user], env=self.env,
                           capture_output=True)
            subprocess.run(["userdel", user], capture_output=True)
        from berth.proxy import control as proxyctl  # the policy proxy the first hardened `up` started

        proxyctl.ProxySupervisor(f"{self.root}/run", f"{self.root}/log").stop()
        from berth.daemon import containerd  # the shared containerd the first `up` started

        containerd.Shared(f"{self.root}/run", f"{self.root}/state", f"{self.root}/log").stop()
        from berth.daemon import cgroups
        from berth.lifecycle import logindigest  # berth's cgroup parents, once empty; this run's login digest

        for d in {os.path.dirname(u) for u in cgroups.user_dirs("x")}:
            try:
                os.rmdir(d)
            except OSError:
                pass
        try:
            os.unlink(logindigest.path_for(self.config))
            if not self.had_login_digests:
                os.rmdir(logindigest.DIR)  # made by this run's `berth up`; empty unless a real login came
        except OSError:
            pass
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f if line.split()[1].startswith(self.root + "/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def pip_installed_python(venv="/tmp/berth-bench-venv"):
    """berth installed the ordinary way: `pip install` of this checkout into a
    venv of the system's python3, setuptools left in place (as a fresh venv
    has it). Made once, berth reinstalled on each call; returns its python."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "setuptools", here],
                       check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--force-reinstall", here], check=True)
    has = subprocess.run([python, "-c", "import setuptools"], capture_output=True).returncode == 0
    if not has:
        raise SystemExit(f"{venv} has no setuptools: the figure must be taken with it in place")
    return python
