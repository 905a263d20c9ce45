"""A private one-node Slurm for the integration tests: Debian's slurm-wlm
and munge, started by the test itself, sharing nothing with the host's.

munged runs with a key, socket, pid, log and seed file of its own;
slurmctld -D and slurmd -D read a slurm.conf of their own (SLURM_CONF,
which every client command is given too) whose AuthInfo names that munge
socket, with free loopback ports and state and spool dirs in the cluster's
directory. The node has 2 CPUs and two fake GPUs (gres.conf AutoDetect=off):
character devices of distinct minors (195,0 and 195,1: the Prolog maps
each gres device file to a GPU through its minor, as nvidia's are), which
no driver answers. Nothing under /etc/munge or /etc/slurm is read or
written, and every process is stopped by its pid, the directory removed.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SBIN = "/usr/sbin"
MUNGED = f"{SBIN}/munged"
MUNGEKEY = f"{SBIN}/mungekey"
SLURMCTLD = f"{SBIN}/slurmctld"
SLURMD = f"{SBIN}/slurmd"
GPU_MAJOR = 195  # nvidia's; the files are ours, in the cluster's dir, and no driver answers them


def missing():
    """Why no private Slurm can run here, or None."""
    for path in (MUNGED, MUNGEKEY, SLURMCTLD, SLURMD, "/usr/bin/srun"):
        if not os.path.exists(path):
            return f"{path} missing (apt-get install munge slurmctld slurmd slurm-client)"
    return None


def no_cgroup_v1():
    """Why a cluster with cgroups=True cannot run here, or None (Slurm 22.05's cgroup/v2 wants systemd)."""
    for controller in ("memory", "cpuset", "freezer"):
        if not os.path.exists(f"/sys/fs/cgroup/{controller}/cgroup.procs"):
            return f"no cgroup v1 {controller} hierarchy at /sys/fs/cgroup/{controller}"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One node, one partition; `hooks` maps slurm.conf's Prolog, Epilog,
    TaskProlog (...) to program paths."""

    def __init__(self, parent="/tmp", hooks=None, extra_conf="", cgroups=False):
        self.dir = tempfile.mkdtemp(prefix="slurm-", dir=parent)
        os.chmod(self.dir, 0o755)  # the clients, run as test users, read slurm.conf and reach munge's socket
        self.node = socket.gethostname().split(".")[0]
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.munge_socket = os.path.join(self.dir, "munge", "munge.socket")
        self.gpu_files = [os.path.join(self.dir, "dev", f"nvidia{i}") for i in range(2)]
        self.hooks = dict(hooks or {})
        self.extra_conf = extra_conf
        # task/cgroup and proctrack/cgroup (cgroup.conf's v1 or v2 as the host has it), jobs held to
        # --mem and their cores, PrologFlags=Contain: Slurm's cgroup of a job exists before its Prolog
        self.cgroups = cgroups
        self.procs = {}
        self.logs = {}

    # --- starting -----------------------------------------------------------

    def start(self):
        t0 = time.monotonic()
        self.cgroups_before = set(_slurm_cgroups())
        try:
            self._start_munged()
            self._write_conf()
            self._start("slurmctld", [SLURMCTLD, "-D", "-f", self.conf])
            self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, "slurmctld answering")
            self._start("slurmd", [SLURMD, "-D", "-f", self.conf, "-N", self.node])
            self._wait(lambda: self.node_state() in ("IDLE", "MIXED", "ALLOCATED"), "the node idle")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_munged(self):
        d = os.path.join(self.dir, "munge")
        os.makedirs(d, mode=0o755)
        key = os.path.join(d, "munge.key")
        subprocess.run([MUNGEKEY, "--create", f"--keyfile={key}"], check=True)
        self._start("munged", [MUNGED, "-F", "-f", f"--key-file={key}", f"--socket={self.munge_socket}",
                               f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                               f"--seed-file={d}/munged.seed"])
        self._wait(lambda: os.path.exists(self.munge_socket), "munged's socket")

    def _write_conf(self):
        os.makedirs(os.path.join(self.dir, "dev"))
        for minor, path in enumerate(self.gpu_files):
            os.mknod(path, 0o666 | 0o020000, os.makedev(GPU_MAJOR, minor))
        for sub in ("state", "spool", "log"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o755)
        ctld_port, slurmd_port = _free_port(), _free_port()
        hooks = "\n".join(f"{k}={v}" for k, v in self.hooks.items())
        plugins = ("ProctrackType=proctrack/cgroup\nTaskPlugin=task/cgroup" if self.cgroups
                   else "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none")
        if self.cgroups:
            with open(os.path.join(self.dir, "cgroup.conf"), "w") as f:
                f.write("CgroupPlugin=cgroup/v1\nConstrainRAMSpace=yes\nConstrainCores=yes\nConstrainDevices=no\n")
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=berthtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.dir}/state
SlurmdSpoolDir={self.dir}/spool/%n
SlurmctldPidFile={self.dir}/slurmctld.pid
SlurmdPidFile={self.dir}/slurmd.pid
SlurmctldLogFile={self.dir}/log/slurmctld.log
SlurmdLogFile={self.dir}/log/slurmd.log
SlurmdDebug=debug
{plugins}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters={"CR_Core_Memory" if self.cgroups else "CR_Core"}
GresTypes=gpu
PrologFlags={"Alloc,Contain" if self.cgroups else "Alloc"}
ReturnToService=1
SchedulerParameters=sched_interval=1
{hooks}
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=2 Gres=gpu:2 {"RealMemory=1024 " if self.cgroups else ""}State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
{self.extra_conf}
""")
        with open(os.path.join(self.dir, "gres.conf"), "w") as f:
            f.write("AutoDetect=off\n"
                    f"NodeName={self.node} Name=gpu File={self.dir}/dev/nvidia[0-1]\n")

    def _start(self, name, argv):
        log = open(os.path.join(self.dir, f"{name}.out"), "wb")
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def _wait(self, ready, what, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited {p.returncode} waiting for {what}:\n{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}:\n" + "\n".join(self.log_tail(n) for n in self.procs))

    # --- using ----------------------------------------------------------------

    def env(self, **extra):
        return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "SLURM_CONF": self.conf, **extra}

    def run(self, argv, user=None, check=True, timeout=60, env=None):
        """A Slurm command (or any), as root or as `user` (runuser), with our SLURM_CONF and nothing else set."""
        cmd = ["env", "-i", *(f"{k}={v}" for k, v in self.env(**(env or {})).items()), *argv]
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def srun(self, user, *args, check=True, timeout=60):
        return self.run(["srun", *args], user=user, check=check, timeout=timeout)

    def node_info(self):
        """`scontrol show node` as a dict of its fields."""
        out = self.run(["scontrol", "-o", "show", "node", self.node], check=False).stdout
        fields = {}
        for word in out.split():
            key, _, value = word.partition("=")
            fields[key] = value
        return fields

    def node_state(self):
        """The node's state, e.g. IDLE, MIXED, or IDLE+DRAIN."""
        return self.node_info().get("State", "")

    def jobs(self, user=None):
        argv = ["squeue", "-h", "-o", "%i %T"] + (["-u", user] if user else [])
        return dict(line.split() for line in self.run(argv).stdout.splitlines())

    def wait_for(self, ready, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def log_tail(self, name, lines=30):
        paths = [os.path.join(self.dir, f"{name}.out"), os.path.join(self.dir, "log", f"{name}.log")]
        text = ""
        for p in paths:
            try:
                text += pathlib.Path(p).read_text(errors="replace")
            except FileNotFoundError:
                pass
        return f"--- {name}:\n" + "\n".join(text.splitlines()[-lines:])

    # --- stopping -------------------------------------------------------------

    def stop(self):
        """Cancel what runs, stop the daemons by pid (slurmd, slurmctld, then
        munged), and any slurmstepd of ours left, then remove the directory."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--full", "-u", "root"], check=False)  # nothing as root, normally
            for job in self._all_jobs():
                self.run(["scancel", job], check=False)
            deadline = time.monotonic() + 15
            while self._all_jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.logs[name].close()
        for pid in self.stepds():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for top in set(_slurm_cgroups()) - getattr(self, "cgroups_before", set()):
            _remove_cgroup_tree(top)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _all_jobs(self):
        r = self.run(["squeue", "-h", "-o", "%i"], check=False)
        return r.stdout.split() if r.returncode == 0 else []

    def stepds(self):
        """slurmstepd processes of this cluster: they run with its SLURM_CONF."""
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if not f.read().startswith("slurmstepd"):
                        continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if f"SLURM_CONF={self.conf}".encode() in f.read().split(b"\0"):
                        out.append(int(entry))
            except OSError:
                pass
        return out


def _slurm_cgroups():
    """Slurm's v1 cgroup directories (/sys/fs/cgroup/<controller>/slurm or slurm_<node>)."""
    import glob
    return glob.glob("/sys/fs/cgroup/*/slurm") + glob.glob("/sys/fs/cgroup/*/slurm_*")


def _remove_cgroup_tree(top):
    """What slurmd left of its cgroups once every job ended: empty directories, deepest first."""
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
