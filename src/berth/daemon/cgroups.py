"""The cgroup above all of one user's containers, made and limited by berth:
dockerd's `cgroup-parent` is /berth/<user>, so runc puts every container of
the user below it, and the kernel holds them to the user's limits together
(a container past the user's memory is OOM-killed inside the user's share;
the host and other users are untouched). cgroupfs layout, v1 or v2; where
dockerd uses systemd's cgroup driver, the user's slice, berth-<user>.slice,
limited with `systemctl set-property`.

The user never names it: the hardened policy refuses a container's
CgroupParent, so no container of theirs lives outside it.
"""

import errno
import logging
import os
import subprocess
import time

from berth.core import limits

log = logging.getLogger(__name__)

ROOT = "/sys/fs/cgroup"
PARENT = "berth"
CONTROLLERS = ("memory", "cpu", "pids")


def version(root=ROOT):
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def cgroupfs_driver(daemon_json, systemd_booted, root=ROOT):
    """Whether dockerd manages cgroups itself (the cgroupfs driver), which a
    cgroup-parent path needs. With systemd as PID 1 on cgroup v2, or where
    the site's [daemon_json] asks for it, dockerd uses the systemd driver,
    whose parents are slices: berth does not limit users there yet."""
    opts = daemon_json.get("exec-opts", [])
    if any(str(o).replace(" ", "") == "native.cgroupdriver=systemd" for o in opts):
        return False
    if any(str(o).replace(" ", "") == "native.cgroupdriver=cgroupfs" for o in opts):
        return True
    return not (systemd_booted and version(root) == 2)


def parent_of(user, cgroupfs=True):
    """dockerd's cgroup-parent for the user: a path for the cgroupfs driver,
    a slice for systemd's."""
    return f"/{PARENT}/{user}" if cgroupfs else slice_of(user)


def slice_of(user):
    """The user's slice: berth-<user>.slice, below berth.slice. A '-' in a
    slice's name means one level down, so a user's own is escaped."""
    return f"{PARENT}-" + user.replace("-", "\\x2d") + ".slice"


def slice_properties(share):
    """systemd's names for the user's share (core/limits.py). Pure."""
    return [f"MemoryMax={share.memory or 'infinity'}", f"CPUWeight={share.cpu_weight}",
            f"TasksMax={share.pids or 'infinity'}"]


def apply_slice(user, share, run=subprocess.run):
    """systemd's driver: the limits on the user's slice (for this boot: the
    next `berth up` sets them again)."""
    argv = ["systemctl", "set-property", "--runtime", slice_of(user), *slice_properties(share)]
    r = run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        sentence = f"{' '.join(argv[3:])}: {r.stderr.strip()}"
        log.warning("limits of %s: could not set %s", user, sentence)
        return [sentence]
    return []


def remove_slice(user, run=subprocess.run):
    """The user's slice goes, and with it berth's runtime settings of it."""
    for verb in ("stop", "revert"):
        run(["systemctl", verb, slice_of(user)], capture_output=True, text=True)


def user_dirs(user, root=ROOT):
    """Where the user's cgroup is: one directory for v2, one in each v1
    hierarchy runc may have made it in (named ones too, e.g. name=systemd)."""
    if version(root) == 2:
        return [os.path.join(root, PARENT, user)]
    try:
        hierarchies = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [os.path.join(root, h, PARENT, user) for h in hierarchies
            if os.path.isdir(os.path.join(root, h))]


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def _enable_v2_controllers(root):
    """v2: memory, cpu and pids handed down to /berth and from it to users."""
    for directory in (root, os.path.join(root, PARENT)):
        try:
            with open(os.path.join(directory, "cgroup.subtree_control")) as f:
                enabled = set(f.read().split())
        except FileNotFoundError:
            continue
        missing = [c for c in CONTROLLERS if c not in enabled]
        if missing:
            _write(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + c for c in missing))


def apply(user, share, root=ROOT):
    """Make the user's cgroup where missing and set its limits, also under
    containers that run (a lower memory limit than they use now is
    refused by the kernel: that one is reported and left as it was).
    Returns what could not be set, as sentences."""
    v = version(root)
    failed = []
    if v == 2:
        try:
            os.makedirs(os.path.join(root, PARENT), exist_ok=True)
            _enable_v2_controllers(root)
        except OSError as e:  # a read-only or delegated cgroupfs: the user goes up unlimited, and it is said
            failed.append(f"the controllers for /{PARENT}: {e.strerror}")
    missing = [c for c in CONTROLLERS if v == 1 and not os.path.isdir(os.path.join(root, c))]
    failed += [f"cgroup v1 has no {c} hierarchy here" for c in missing]
    for path, value in file_writes(user, share, root, v):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write(path, value)
        except OSError as e:
            why = "its containers use more now" if e.errno == errno.EBUSY else e.strerror
            failed.append(f"{os.path.basename(path)} = {value} for {user}: {why}")
    for sentence in failed:
        log.warning("limits of %s: could not set %s", user, sentence)
    return failed


def file_writes(user, share, root=ROOT, v=None):
    """[(file, value)] that set the user's `share` on the user's cgroup (the v1
    hierarchies this host has), in order; what `apply` writes, and what a
    launch plan writes before dockerd starts (prelaunch.py)."""
    v = version(root) if v is None else v
    out = []
    for controller, name, value in limits.writes(share, v):
        if v == 2:
            out.append((os.path.join(root, PARENT, user, name), value))
        elif os.path.isdir(os.path.join(root, controller)):
            out.append((os.path.join(root, controller, PARENT, user, name), value))
    return out


def remove(user, root=ROOT, below=""):
    """Remove the user's cgroup (their daemon is down: runc has removed the
    containers' own), or the one `below` it (a Slurm job's). Empty ones
    left by a killed daemon go too, deepest first; a cgroup something still
    runs in stays, and is reported."""
    left = []
    for top in user_dirs(user, root):
        top = os.path.join(top, below) if below else top
        if not os.path.isdir(top):
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda w: w[0].count("/"), reverse=True):
            try:
                os.rmdir(directory)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    left.append(directory)
    for directory in left:
        log.warning("cgroup %s is still in use; left in place", directory)
    return left


def _found(user, controller, root):
    """The user's cgroup in one controller's tree (v1) or the one tree (v2):
    berth's own path, or the slice systemd's driver made."""
    base = root if version(root) == 2 else os.path.join(root, controller)
    for relative in (os.path.join(PARENT, user), os.path.join(f"{PARENT}.slice", slice_of(user))):
        if os.path.isdir(os.path.join(base, relative)):
            return os.path.join(base, relative)
    return os.path.join(base, PARENT, user)


def read(user, root=ROOT):
    """What the kernel says of the user's cgroup: memory in use and its limit
    (bytes; limit None when there is none), for status."""
    v = version(root)
    directory = _found(user, "memory", root)
    names = ("memory.current", "memory.max") if v == 2 else ("memory.usage_in_bytes", "memory.limit_in_bytes")
    values = []
    for name in names:
        try:
            with open(os.path.join(directory, name)) as f:
                text = f.read().strip()
        except OSError:
            return None
        values.append(None if text == "max" else int(text))
    used, limit = values
    if limit is not None and limit >= 1 << 62:  # v1's "no limit" is a page-rounded LONG_MAX
        limit = None
    return used, limit


def cpu_usage_ns(user, root=ROOT):
    """CPU time all the user's containers used so far (ns), or None (no cgroup)."""
    try:
        if version(root) == 2:
            with open(os.path.join(_found(user, "cpu", root), "cpu.stat")) as f:
                fields = dict(line.split() for line in f if line.strip())
            return int(fields["usage_usec"]) * 1000
        with open(os.path.join(_found(user, "cpuacct", root), "cpuacct.usage")) as f:
            return int(f.read())
    except (OSError, KeyError, ValueError):
        return None


# --- where users' dockerds run ------------------------------------------------------
# Each user's dockerd, and so everything it starts (docker-proxy for -p, git
# for a build's sources), runs in a cgroup2 of its own, so the firewall can
# tell one user's daemon from another's and from root's own tools
# (rules.plan_user_rules). Launched directly: <v2>/berth-dockerd/<user>,
# made by berth; as a systemd unit: the unit's own, in berthd.slice.

DAEMONS = "berth-dockerd"
DAEMON_SLICE = "berthd.slice"
# Set on a daemon cgroup once rules that name it are in the kernel. The
# kernel resolves a rule's path when the rule is added: a cgroup made again
# under the same path is another one, which those rules do not match. A
# mark is lost with its directory, so a cgroup without one gets its rules
# written again.
MARK = "trusted.berth.rules"


def v2_root(root=ROOT):
    """The cgroup2 hierarchy: the root itself (pure v2), its unified/ (a
    hybrid host), or None (cgroup v1 alone)."""
    if version(root) == 2:
        return root
    unified = os.path.join(root, "unified")
    return unified if os.path.exists(os.path.join(unified, "cgroup.procs")) else None


def daemon_cgroups(user, unit=None):
    """(the user's daemon's cgroup, the one above every user's), relative
    to the cgroup2 root; `unit`: the systemd unit dockerd runs as. Pure."""
    if unit:
        return f"{DAEMON_SLICE}/{unit}", DAEMON_SLICE
    return f"{DAEMONS}/{user}", DAEMONS


def ensure_daemon_dirs(relative, root=None):
    """Make the cgroups (relative paths) where missing; their absolute paths."""
    root = v2_root() if root is None else root
    made = [os.path.join(root, r) for r in relative]
    for path in made:
        os.makedirs(path, exist_ok=True)
    return made


def marked(path):
    try:
        return os.getxattr(path, MARK) == b"1"
    except OSError:
        return False  # no directory, or no xattrs here: its rules are written again


def mark(path):
    try:
        os.setxattr(path, MARK, b"1")
    except OSError as e:
        log.debug("could not mark %s (%s): its rules are written again at the next up", path, e.strerror)


def remove_daemon_cgroup(user, root=None, wait=2):
    """The cgroup a directly launched dockerd of the user ran in, once it
    is empty (its rules are gone by then); True if it was removed or was
    not there."""
    root = v2_root() if root is None else root
    if root is None:
        return True
    path = os.path.join(root, DAEMONS, user)
    for _ in range(wait * 20):
        try:
            os.rmdir(path)
            return True
        except OSError as e:
            if e.errno == errno.ENOENT:
                return True
            if e.errno != errno.EBUSY:
                break
        time.sleep(0.05)  # a process killed a moment ago leaves it once its exit is done
    log.info("cgroup %s is still in use; left in place (the next down removes it)", path)
    return False


# --- out of a Slurm job's cgroups -----------------------------------------------------
# A login adopted into a job by pam_slurm_adopt runs in the job's cgroups:
# what berth starts from it (dockerd, the shared containerd, the proxy)
# would be born there, be counted and limited as the job, and die with it
# (proctrack/cgroup kills every process in the job's cgroup at its end).
# So berth moves itself out before it starts anything.

def slurm_job_of(proc_cgroup):
    """The Slurm job whose cgroup a /proc/<pid>/cgroup text names
    (".../job_42/step_extern/..."), or None. Pure."""
    for line in proc_cgroup.splitlines():
        for part in line.split(":", 2)[-1].split("/"):
            if part.startswith("job_") and part[4:].isdigit():
                return int(part[4:])
    return None


def leave_plan(proc_cgroup, root=ROOT):
    """The cgroup.procs files (each hierarchy's top) that take a process out
    of the Slurm job cgroups its /proc/<pid>/cgroup text names. Pure but
    for where the hierarchies are mounted."""
    out = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if slurm_job_of(path) is None:
            continue
        if controllers == "":
            top = v2_root(root)
        else:
            top = os.path.join(root, controllers.removeprefix("name="))
        if top and os.path.exists(os.path.join(top, "cgroup.procs")):
            out.append(os.path.join(top, "cgroup.procs"))
    return out


def leave_slurm_job(root=ROOT, proc_self="/proc/self/cgroup"):
    """Move this process (and so what it starts from now on) out of any
    Slurm job's cgroups, to the top of each hierarchy; the job it was in,
    or None."""
    try:
        with open(proc_self) as f:
            text = f.read()
    except OSError:
        return None
    job = slurm_job_of(text)
    if job is None:
        return None
    for procs in leave_plan(text, root):
        try:
            with open(procs, "w") as f:
                f.write("0")  # "0": the writing process
        except OSError as e:
            log.warning("could not leave job %s's cgroup (%s): %s", job, procs, e.strerror)
    log.info("left Slurm job %s's cgroups: what berth starts is not the job's", job)
    return job
