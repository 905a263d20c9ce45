"""`berth demo`: the seed's whole idea, shown in under a minute.

Two throwaway users, each with their own daemon; a web server on the same
port 8080 in each user's net container, each answering with its own page;
each user's `docker ps` showing only their own containers. Then everything
goes again (users, daemons, bridges, rules, data, leases) unless --keep.
"""

import io
import os
import random
import subprocess
import tarfile
import time

from berth.core import paths
from berth.core.errors import BerthError
from berth.lifecycle import hostobjects, repair
from berth.lifecycle.down import purge
from berth.lifecycle.up import up
from berth.proxy import control

BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "httpd", "wget", "mkdir", "echo", "sleep")
IMAGE = "berth-demo/busybox:1"


class Demo:
    def __init__(self, cfg, out, keep=False):
        self.cfg, self.out, self.keep = cfg, out, keep
        self.t0 = time.monotonic()
        tag = "%04x" % random.randrange(0x10000)
        self.users = [f"demo{tag}a", f"demo{tag}b"]
        self.made_users = []
        # Left as found: a policy proxy or shared containerd the demo started goes with it.
        self.proxy_was_running = control.ping(cfg.paths.run_dir) is not None
        shared = hostobjects.shared_containerd(cfg)
        self.containerd_was_running = shared is None or shared.external or shared.running() is not None

    def say(self, text):
        print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", file=self.out, flush=True)

    def docker(self, user, *args, as_user=False):
        cmd = ["docker", "-H", paths.for_user(self.cfg, user).docker_host, *args]
        if as_user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise BerthError(f"'{' '.join(args)}' failed for {user}: {r.stderr.strip()}",
                             hint="see berth logs " + user)
        return r.stdout

    def run(self):
        try:
            self._show()
        finally:
            if self.keep:
                self.say(f"kept {' and '.join(self.made_users)}; to remove one later: "
                         f"berth down --purge --yes USER && userdel USER")
            else:
                self._clean()

    def _show(self):
        busybox = next((b for b in BUSYBOX if os.path.exists(b)), None)
        if busybox is None:
            raise BerthError("the demo needs static busybox for its web server", hint="apt-get install busybox-static")
        self.say(f"creating two throwaway users: {self.users[0]} and {self.users[1]}")
        for user in self.users:
            subprocess.run(["useradd", "-M", "-N", "-g", "users", "-s", "/bin/sh", user], check=True,
                           capture_output=True)
            self.made_users.append(user)
        ips = {}
        for user in self.users:
            t = time.monotonic()
            r = up(self.cfg, user)
            ips[user] = r.net_ip
            self.say(f"berth up {user}: own dockerd (pid {r.pid}), bridge {r.bridge}, block {r.block}, "
                     f"net container {r.net_ip} ({time.monotonic() - t:.2f} s)")
        image = _busybox_tarball(busybox)
        for user in self.users:
            subprocess.run(["docker", "-H", paths.for_user(self.cfg, user).docker_host, "import",
                            "-c", "ENV PATH=/bin", "-", IMAGE], input=image, check=True, capture_output=True)
            self.docker(user, "run", "-d", "--name", "web", "--net=container:net", IMAGE, "sh", "-c",
                        f"mkdir -p /www && echo 'hello from {user}' > /www/index.html && "
                        f"exec httpd -f -p 8080 -h /www")
            self.say(f"{user}: docker run --net=container:net web  (httpd on port 8080 in {user}'s namespace)")
        for user in self.users:
            page = self._fetch(user, "127.0.0.1")
            self.say(f"{user}: wget 127.0.0.1:8080 inside the namespace → {page!r}")
        for user in self.users:
            page = subprocess.run([busybox, "wget", "-qO-", f"http://{ips[user]}:8080"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
            self.say(f"host: wget {ips[user]}:8080 → {page!r}  (same port, two servers)")
        for user in self.users:
            names = self.docker(user, "ps", "--format", "{{.Names}}", as_user=True).split()
            self.say(f"{user}$ docker ps → {', '.join(sorted(names))}  (only {user}'s own)")
        other = self.users[1]
        r = subprocess.run(["runuser", "-u", other, "--", "docker", "-H",
                            paths.for_user(self.cfg, self.users[0]).docker_host, "ps"],
                           capture_output=True, text=True, timeout=30)
        verdict = "permission denied" if "permission denied" in r.stderr.lower() else r.stderr.strip() or "allowed!"
        self.say(f"{other}$ docker -H <{self.users[0]}'s socket> ps → {verdict}")
        if self.cfg.security.mode == "hardened":
            r = subprocess.run(["runuser", "-u", other, "--", "docker", "-H",
                                paths.for_user(self.cfg, other).docker_host, "run", "--rm", "-v", "/:/host",
                                "--privileged", IMAGE, "true"], capture_output=True, text=True, timeout=30)
            self.say(f"{other}$ docker run --privileged -v /:/host ... → {r.stderr.strip() or 'allowed!'}")

    def _fetch(self, user, host):
        for _ in range(30):
            try:
                return self.docker(user, "exec", "web", "wget", "-qO-", f"http://{host}:8080").strip()
            except BerthError:
                time.sleep(0.1)
        raise BerthError(f"{user}'s web server did not answer", hint="see berth logs " + user)

    def _clean(self):
        for user in self.made_users:
            try:
                # httpd as PID 1 ignores SIGTERM: without this, down would wait out its stop timeout.
                self.docker(user, "rm", "-f", "web")
            except BerthError:
                pass  # never started, or the daemon is gone: purge copes with both
            try:
                purge(self.cfg, user)
            except BerthError as e:
                self.say(f"could not purge {user}: {e.one_line()}")
            subprocess.run(["userdel", user], capture_output=True)
        info = control.ping(self.cfg.paths.run_dir)
        if not self.proxy_was_running and info is not None and info["users"] == 0:
            hostobjects.proxy_supervisor(self.cfg).stop()
        if not self.containerd_was_running and not repair.daemons_on_shared_containerd(self.cfg):
            hostobjects.shared_containerd(self.cfg).stop()
        if self.made_users:
            self.say("cleaned up: users, daemons, bridges, rules, data and leases are gone")


def _busybox_tarball(busybox):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()
