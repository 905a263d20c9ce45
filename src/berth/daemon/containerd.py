"""The one containerd every user's dockerd shares.

Left to itself, each dockerd starts a containerd of its own: about 22 MiB
(PSS) and 40 ms of every cold start, for each user. Instead berth runs one
for the host (or uses the distribution's containerd.service where systemd
runs one) and gives each dockerd a containerd namespace of its own, and
one for its plugins: `berth.alice`, `berth.alice.plugins`. Users never
reach containerd: its socket is root's alone, and dockerd is the only
client.

If containerd dies, containers keep running (their shims outlive it) and
dockerd reconnects once it is back: the next `berth up`, login or reaper
pass starts it again, and containerd picks its shims back up from its
state directory.

[daemon].containerd = "shared" (this), "own" (each dockerd its own, as
dockerd does by itself), or the absolute path of a containerd socket to use.
"""

import logging
import os
import re
import shutil
import subprocess
from collections import namedtuple

from berth.core import paths, proc, supervision
from berth.core.errors import DaemonError, MissingBinary
from berth.core.fsutil import atomic_write, ensure_dir, remove
from berth.core.locks import flock
from berth.core.paths import ROOT_ONLY, SYSTEM_PATH, TRAVERSE_ONLY
from berth.daemon import engine, hostns
from berth.daemon.hostns import HOST, in_mount_namespace

log = logging.getLogger(__name__)

UNIT = "berth-containerd.service"
# The distribution's containerd (containerd.service), used where systemd runs it.
SYSTEM_SOCKET = "/run/containerd/containerd.sock"
# containerd's rule for a namespace name (namespaces.Validate).
_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")

Record = namedtuple("Record", "pid start_ticks config")


def namespaces(user, uid):
    """The containerd namespaces of a user's dockerd: its containers', and
    its plugins'. By name where containerd allows the name, else by uid.
    Joined with '.', which no user name holds: berth.alice, berth.alice.plugins
    and berth.uid.1003 can be nobody else's (berth-alice-plugins could have
    been the user alice-plugins's)."""
    base = f"berth.{user}"
    if not _NAMESPACE.fullmatch(base) or len(base) > 60:
        base = f"berth.uid.{uid}"
    return base, base + ".plugins"


def render_config(root, state, address):
    """containerd's config.toml: its own root, state and socket, and none of
    the plugins dockerd never asks for (the CRI server, other snapshotters).
    Pure."""
    disabled = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
                "io.containerd.internal.v1.tracing"]
    quoted = ", ".join(f'"{p}"' for p in disabled)
    return (f'version = 2\nroot = "{root}"\nstate = "{state}"\n'
            f"disabled_plugins = [{quoted}]\n\n"
            f'[grpc]\n  address = "{address}"\n  uid = 0\n  gid = 0\n\n'
            '[ttrpc]\n  address = ""\n\n[debug]\n  address = ""\n\n[metrics]\n  address = ""\n')


answers = engine.listens


class Shared:
    """berth's own containerd for the host: started where none answers,
    found by its record (pid, start time, command line), as dockerd is."""

    def __init__(self, run_dir, state_dir, log_dir, setting="shared", use_systemd=False):
        self.setting = setting
        self.run_dir, self.state_dir = str(run_dir), str(state_dir)
        self.dir = paths.own_dir(run_dir, paths.CONTAINERD_DIR)
        self.root = os.path.join(str(state_dir), "containerd")
        self.config = os.path.join(self.dir, "config.toml")
        self.record_path = os.path.join(self.dir, "containerd.rec")
        self.log_file = paths.own_log(log_dir, paths.CONTAINERD_LOG)
        self.use_systemd = use_systemd
        # Known by its record and its config on its command line; under
        # systemd (Restart=always) the unit's main process is the truth.
        self.process = supervision.Supervisor(
            "the shared containerd", self.log_file, UNIT, unit_properties(self.log_file), use_systemd=use_systemd,
            record_path=self.record_path, kind=Record, fields={"config": self.config}, mark=self.config,
            follows_unit=True, block=True, delays=(0.002, 0.05))
        self.started = None  # the record of the one this object started

    @property
    def own_address(self):
        return os.path.join(self.dir, "containerd.sock")

    @property
    def external(self):
        """The socket of a containerd berth does not run, or None. Decided
        once for this object: the distribution's, if it answered then."""
        if not hasattr(self, "_external"):
            if self.setting.startswith("/"):
                self._external = self.setting
            else:
                self._external = SYSTEM_SOCKET if self.use_systemd and answers(SYSTEM_SOCKET) else None
        return self._external

    def address(self):
        """The socket users' dockerds are given."""
        return self.external or self.own_address

    # --- the record ---------------------------------------------------------------

    def record(self):
        return self.process.recorded()

    def mount_namespace(self):
        """Where users' dockerds must run so that runc, under containerd,
        sees the root filesystems they mount: the namespace of berth's
        containerd, as an open descriptor (taken, then the pid checked
        again: a pid reused by a user's process in between would give
        dockerd a namespace that user made), or the host's path for one
        berth was given. The caller closes a descriptor."""
        rec = None if self.external else self.running()
        if rec is None:
            return HOST
        try:
            fd = os.open(f"/proc/{rec.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return HOST
        if not proc.alive(rec.pid, rec.start_ticks):
            os.close(fd)
            raise DaemonError("the shared containerd exited while a daemon was being started on it",
                              hint="log in again, or berth up, which starts it again")
        return fd

    def running(self):
        """The record of berth's containerd while it runs, else None."""
        return self.process.running()

    # --- start and stop ---------------------------------------------------------------

    def launch(self, own=False):
        """Start berth's containerd unless it runs (or another is used, unless
        `own`: for daemons started on berth's); returns at once (see
        wait_ready). Returns whether it started one. Two logins at once
        start one: the second finds the first's running, and waits for it."""
        if (self.external and not own) or self.running():
            return False
        binary = shutil.which("containerd", path=SYSTEM_PATH)
        if binary is None:
            raise MissingBinary("containerd not found on PATH",
                                hint="install it (apt-get install containerd, which docker.io depends on), "
                                     'or set [daemon].containerd = "own"')
        ensure_dir(self.run_dir, TRAVERSE_ONLY)  # berth's own modes, not makedirs' 0755
        ensure_dir(self.dir, ROOT_ONLY)
        with flock(os.path.join(self.dir, "start.lock"), 30.0, "starting the shared containerd"):
            if self.running():
                return False
            return self._start(binary)

    def _start(self, binary):
        if answers(self.own_address):
            return False  # one berth does not know of answers there: never take its socket away
        ensure_dir(self.state_dir, TRAVERSE_ONLY)
        ensure_dir(self.root, ROOT_ONLY)
        ensure_dir(os.path.dirname(self.log_file), ROOT_ONLY)
        remove(self.own_address)
        atomic_write(self.config, render_config(self.root, os.path.join(self.dir, "state"), self.own_address),
                     mode=0o600)
        argv = [binary, "--config", self.config]
        try:
            users = ensure_dir(os.path.join(self.state_dir, "users"), TRAVERSE_ONLY)
            argv = hostns.enter(argv, hostns.ensure_berth_namespace(self.run_dir, inert=(users,)))
        except OSError as e:
            log.warning("containerd starts in the host's mount namespace: %s; containers' root "
                        "filesystems are visible from the host", e)
            argv = in_mount_namespace(argv)
        self.started = self.process.start(argv)
        return True

    def wait_ready(self, timeout=10.0, own=False):
        """Until the socket dockerd is given (berth's own, with `own`) accepts connections."""
        address = self.own_address if own else self.address()
        self.process.wait_ready(lambda: answers(address), timeout, self.started, where=f" on {address}")
        return address

    def ensure(self, own=False):
        self.launch(own)
        return self.wait_ready(own=own)

    def stop(self, timeout=10.0):
        """Stop berth's containerd (its shims, and so the containers, go on)."""
        rec = self.running()
        if rec is None:
            return False
        self.process.stop(rec, timeout)
        return True

    def log_tail(self, lines=3):
        return self.process.log_tail(lines)

    def remove_namespaces(self, names):
        """Forget a purged user's (empty) namespaces; containerd refuses
        to remove one that still holds anything, and that is left."""
        ctr = shutil.which("ctr", path=SYSTEM_PATH)
        if ctr is None or not answers(self.address()):
            return
        try:
            subprocess.run([ctr, "--address", self.address(), "namespaces", "remove", *names],
                           capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("could not remove containerd namespaces %s: %s", ", ".join(names), e)


def unit_properties(log_file):
    return (
        ("Description", "berth: the containerd users' Docker daemons share"),
        ("Type", "exec"),
        # As containerd.service: its shims, and the containers below them,
        # are not stopped with it, and dockerd reconnects when it is back.
        ("KillMode", "process"),
        ("Delegate", "yes"),
        ("Restart", "always"),
        ("LimitNOFILE", "1048576"),
        ("TasksMax", "infinity"),
        ("Environment", f"PATH={SYSTEM_PATH}"),
        ("StandardOutput", f"append:{log_file}"),
        ("StandardError", f"append:{log_file}"),
    )


def unit_text(log_file, config):
    binary = shutil.which("containerd", path=SYSTEM_PATH) or "/usr/bin/containerd"
    return supervision.unit_text(unit_properties(log_file), [binary, "--config", config])


def shim_namespace(args):
    """The containerd namespace a shim's command line names, or None."""
    for flag, value in zip(args, args[1:]):
        if flag == "-namespace":
            return value
    return None

