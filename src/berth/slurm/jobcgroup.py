"""A job's limits, from Slurm's cgroup of the job, and the cgroup berth
makes for the job's containers, held to them.

Containers live in dockerd's cgroups, not the job's (dockerd is no child
of the job): Slurm neither limits nor counts them. So the Prolog reads
the job's memory and CPU limits where Slurm's cgroup of the job exists
(task/cgroup, when it makes the job's cgroup before the Prolog), else the
CPUs the job was allocated on the node (its environment says them; its
memory it does not), and makes /berth/<user>/job-<id> below the user's own cgroup (cgroups.py), held to
them: the grant names it, and the proxy makes it the cgroup-parent of
every container of the job. Where dockerd uses systemd's cgroup driver,
the parent is a slice below the user's, berth-<user>-job<id>.slice,
limited with `systemctl set-property --runtime`.

Slurm's paths: v1 <controller>/slurm/uid_<uid>/job_<id> (slurm_<node>/
on Debian's 22.05); v2 (22.05 and later) <slice>/slurmstepd.scope/job_<id>
(or <node>_slurmstepd.scope).
"""

import glob
import logging
import os
import subprocess

from berth.core.limits import memory_limit
from berth.daemon import cgroups

log = logging.getLogger(__name__)

NANO = 1_000_000_000
V1_CPU_PERIOD = 100_000  # µs, the kernel's default cfs period


# --- Slurm's cgroup of the job (pure parsers, then the reader) ---------------------

def cpu_max(text):
    """v2 cpu.max ("200000 100000", "max 100000") -> nano-CPUs, 0 for none."""
    quota, _, period = text.strip().partition(" ")
    if not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return 0
    return int(quota) * NANO // int(period)


def cfs_quota(quota_text, period_text):
    """v1 cpu.cfs_quota_us and cpu.cfs_period_us -> nano-CPUs, 0 for none (-1)."""
    quota, period = quota_text.strip(), period_text.strip()
    if not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return 0
    return int(quota) * NANO // int(period)


def cpuset_count(text):
    """A cpuset list ("0-3,8") -> how many CPUs (0 for an empty or bad one)."""
    count = 0
    for part in text.strip().split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            return 0
        count += int(hi) - int(lo) + 1 if sep else 1
    return count


def cpus_of(quota_nano, cpuset_cpus, online):
    """The job's CPUs in nano-CPUs: its CPU quota where Slurm set one, else
    the CPUs of its cpuset (Slurm's ConstrainCores) when fewer than the
    node's `online` ones; 0 for none."""
    if quota_nano:
        return quota_nano
    return cpuset_cpus * NANO if 0 < cpuset_cpus < online else 0


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _slurm_patterns(uid, job_id, root, v):
    """{controller: [glob patterns]} of Slurm's cgroup of the job ("" is v2's one tree)."""
    if v == 2:
        return {"": [os.path.join(root, pattern, f"job_{int(job_id)}")
                     for pattern in ("*.slice/*slurmstepd.scope", "*slurmstepd.scope")]}
    # slurm/, or slurm_<node>/ (Debian's 22.05)
    return {controller: [os.path.join(root, controller, "slurm*", f"uid_{int(uid)}", f"job_{int(job_id)}")]
            for controller in ("memory", "cpu", "cpuset")}


def slurm_job_dirs(uid, job_id, root=cgroups.ROOT):
    """{controller: directory} of Slurm's cgroup of the job, those that exist
    ("" is the one v2 directory)."""
    out = {}
    for controller, patterns in _slurm_patterns(uid, job_id, root, cgroups.version(root)).items():
        found = next((sorted(hits) for hits in map(glob.glob, patterns) if hits), None)
        if found:
            out[controller] = found[0]
    return out


def slurm_memory_files(uid, job_id, root=cgroups.ROOT, version=None):
    """Glob patterns of the file that will hold the job's memory limit in
    Slurm's cgroup of the job, which may not exist yet (22.05 makes it
    after the Prolog): the proxy reads it there once it does (proxy/jobmemory.py)."""
    v = version or cgroups.version(root)
    patterns = _slurm_patterns(uid, job_id, root, v)["" if v == 2 else "memory"]
    return tuple(os.path.join(p, "memory.max" if v == 2 else "memory.limit_in_bytes") for p in patterns)


def slurm_limits(uid, job_id, root=cgroups.ROOT, online=None, allocated=0):
    """(memory bytes, nano-CPUs) Slurm holds the job to on this node, 0 for
    what it does not limit. Where no cgroup of the job exists (yet: Debian's
    22.05 makes it after the Prolog, even with PrologFlags=Contain), the
    CPUs it was `allocated` here, and no memory limit (the Prolog is not
    told it)."""
    online = online or os.cpu_count() or 1
    dirs = slurm_job_dirs(uid, job_id, root)
    if not dirs:
        return 0, cpus_of(0, allocated, online)
    if "" in dirs:
        d = dirs[""]
        memory = memory_limit(_read(os.path.join(d, "memory.max")) or "")
        quota = cpu_max(_read(os.path.join(d, "cpu.max")) or "")
        cpus = cpuset_count(_read(os.path.join(d, "cpuset.cpus.effective")) or "")
        return memory, cpus_of(quota, cpus, online)
    memory = memory_limit(_read(os.path.join(dirs["memory"], "memory.limit_in_bytes")) or "") \
        if "memory" in dirs else 0
    quota = cfs_quota(_read(os.path.join(dirs["cpu"], "cpu.cfs_quota_us")) or "",
                      _read(os.path.join(dirs["cpu"], "cpu.cfs_period_us")) or "") if "cpu" in dirs else 0
    cpus = cpuset_count(_read(os.path.join(dirs["cpuset"], "cpuset.cpus")) or "") if "cpuset" in dirs else 0
    return memory, cpus_of(quota, cpus, online)


# --- berth's cgroup of the job -------------------------------------------------------

def name(job_id):
    """The job's directory below the user's cgroup."""
    return f"job-{int(job_id)}"


def parent(user, job_id, cgroupfs=True):
    """The cgroup-parent of the job's containers: a path for the cgroupfs
    driver, a slice below the user's for systemd's. Pure."""
    if cgroupfs:
        return f"{cgroups.parent_of(user)}/{name(job_id)}"
    return cgroups.slice_of(user).removesuffix(".slice") + f"-job{int(job_id)}.slice"


def file_writes(user, job_id, memory, nano_cpus, version):
    """[(controller, file, value)] that hold the job's cgroup to its
    limits, relative to the cgroup (v2: controller ""). Pure."""
    job = name(job_id)
    here = f"{cgroups.PARENT}/{user}/{job}"
    if version == 2:
        quota = f"{nano_cpus * V1_CPU_PERIOD // NANO} {V1_CPU_PERIOD}" if nano_cpus else f"max {V1_CPU_PERIOD}"
        return [("", f"{here}/memory.max", str(memory) if memory else "max"), ("", f"{here}/cpu.max", quota)]
    return [("memory", f"{here}/memory.limit_in_bytes", str(memory) if memory else "-1"),
            ("cpu", f"{here}/cpu.cfs_period_us", str(V1_CPU_PERIOD)),
            ("cpu", f"{here}/cpu.cfs_quota_us", str(nano_cpus * V1_CPU_PERIOD // NANO) if nano_cpus else "-1")]


def memory_file(user, job_id, root=cgroups.ROOT, version=None):
    """The file that holds the memory limit of berth's cgroup of the job (cgroupfs driver)."""
    controller, relative, _ = file_writes(user, job_id, 0, 0, version or cgroups.version(root))[0]
    return os.path.join(root, controller, relative)


def slice_properties(memory, nano_cpus):
    """systemd's names for the job's limits. Pure."""
    return [f"MemoryMax={memory or 'infinity'}",
            f"CPUQuota={nano_cpus * 100 // NANO}%" if nano_cpus else "CPUQuota="]


def make(user, job_id, memory, nano_cpus, cgroupfs=True, root=cgroups.ROOT, run=subprocess.run):
    """Make the job's cgroup (or limit its slice) and hold it to the limits;
    returns what could not be set, as sentences (the job then runs under
    the user's limits alone, and it is logged)."""
    if not cgroupfs:
        argv = ["systemctl", "set-property", "--runtime", parent(user, job_id, False),
                *slice_properties(memory, nano_cpus)]
        r = run(argv, capture_output=True, text=True)
        return [] if r.returncode == 0 else [f"{' '.join(argv[3:])}: {r.stderr.strip()}"]
    v = cgroups.version(root)
    failed = []
    if v == 2:
        # memory and cpu handed down from the user's cgroup to the job's.
        for directory in (os.path.join(root, cgroups.PARENT), os.path.join(root, cgroups.PARENT, user)):
            try:
                os.makedirs(directory, exist_ok=True)
                with open(os.path.join(directory, "cgroup.subtree_control"), "w") as f:
                    f.write("+memory +cpu")
            except OSError as e:
                failed.append(f"the controllers of {directory}: {e.strerror}")
    for controller, relative, value in file_writes(user, job_id, memory, nano_cpus, v):
        base = os.path.join(root, controller) if controller else root
        if v == 1 and not os.path.isdir(base):
            failed.append(f"cgroup v1 has no {controller} hierarchy here")
            continue
        path = os.path.join(base, relative)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            failed.append(f"{os.path.basename(path)} = {value} for job {job_id}: {e.strerror}")
    for sentence in failed:
        log.warning("limits of %s's job %s: could not set %s", user, job_id, sentence)
    return failed


def remove(user, job_id, cgroupfs=True, root=cgroups.ROOT, run=subprocess.run):
    """The job's cgroup goes (its containers are gone): in every hierarchy,
    deepest first; one something still runs in stays, and is returned."""
    if not cgroupfs:
        run(["systemctl", "stop", parent(user, job_id, False)], capture_output=True, text=True)
        return []
    return cgroups.remove(user, root, below=name(job_id))
