"""Who uses what on the box, per user: CPU (recent %), the memory of their
cgroup, their data-root on disk, and GPU processes. Read from the kernel's
cgroup files, a cache the reaper pass keeps for disk (never a walk of
400 GB on the path of `berth status`), and nvidia-smi where there is one.
"""

import os
import shutil
import subprocess
import time

from berth.core.fsutil import atomic_write, read_trusted
from berth.daemon import cgroups

CPU_SAMPLE = "cpu.sample"    # in the user's run dir: "<ns used> <monotonic-free wall time>"
DISK_CACHE = "disk.usage"    # in the user's state dir: "<bytes> <when measured>"
WINDOW = 0.25                # seconds status samples CPU over when it has no recent sample of its own
MIN_SAMPLE_AGE, MAX_SAMPLE_AGE = 0.2, 600


def cpu_percent(used_before, at_before, used_now, at_now):
    """CPU in use over an interval, in % of one core (400 = four cores busy). Pure."""
    if at_now <= at_before or used_now < used_before:
        return None
    return round((used_now - used_before) / ((at_now - at_before) * 1e9) * 100, 1)


def _read_sample(path):
    raw = read_trusted(path) if os.path.exists(path) else None
    try:
        used, at = raw.decode().split()
        return int(used), float(at)
    except (AttributeError, ValueError, UnicodeDecodeError):
        return None


def cpu_percents(cfg, names, root=cgroups.ROOT, now=time.time, sleep=time.sleep):
    """{user: CPU % since the sample the last status or reaper pass left (if
    under 10 minutes old), else over a WINDOW sampled now for all at once}.
    Leaves a new sample for the next one (root only). None where the user
    has no cgroup (down)."""
    from berth.core import paths

    readings = {n: cgroups.cpu_usage_ns(n, root) for n in names}
    t = now()
    previous = {}
    for name, used in readings.items():
        if used is None:
            continue
        sample = _read_sample(os.path.join(paths.for_user(cfg, name).run_dir, CPU_SAMPLE))
        if sample and MIN_SAMPLE_AGE <= t - sample[1] <= MAX_SAMPLE_AGE and sample[0] <= used:
            previous[name] = sample
    missing = [n for n, used in readings.items() if used is not None and n not in previous]
    if missing:
        before = {n: (readings[n], t) for n in missing}
        sleep(WINDOW)
        t = now()
        readings.update({n: cgroups.cpu_usage_ns(n, root) for n in missing})
        previous.update(before)
    out = {}
    for name, used in readings.items():
        if used is None or name not in previous:
            out[name] = None
            continue
        out[name] = cpu_percent(previous[name][0], previous[name][1], used, t)
        if os.geteuid() == 0:
            run_dir = paths.for_user(cfg, name).run_dir
            if os.path.isdir(run_dir):
                atomic_write(os.path.join(run_dir, CPU_SAMPLE), f"{used} {t}\n", mode=0o600)
    return out


def leave_cpu_samples(cfg, names, root=cgroups.ROOT, now=time.time):
    """The reaper pass: each user's CPU counter now, so the next status
    reports the CPU since then without sampling a window of its own."""
    from berth.core import paths

    t = now()
    for name in names:
        used = cgroups.cpu_usage_ns(name, root)
        run_dir = paths.for_user(cfg, name).run_dir
        if used is not None and os.path.isdir(run_dir):
            atomic_write(os.path.join(run_dir, CPU_SAMPLE), f"{used} {t}\n", mode=0o600)


def tree_bytes(top, deadline=None):
    """Bytes on disk under `top` (st_blocks), one filesystem only (a running
    container's overlay mount is another), walked by directory descriptors
    (os.fwalk): a directory a user swaps for a symlink mid-walk is not
    followed. None when `deadline` (time.monotonic) passes first."""
    try:
        device = os.lstat(top).st_dev
    except OSError:
        return 0
    total = 0
    for _, dirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
        if deadline is not None and time.monotonic() > deadline:
            return None
        for name in list(dirs):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                dirs.remove(name)
                continue
            if st.st_dev != device:
                dirs.remove(name)  # another filesystem mounted here
                continue
            total += st.st_blocks * 512
        for name in files:
            try:
                total += os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def measure_disk(cfg, name, deadline=None, now=time.time):
    """The reaper pass: the user's data-root's size, cached for status;
    None (the cache kept as it was) when it did not finish by `deadline`."""
    from berth.core import paths

    upaths = paths.for_user(cfg, name)
    state = os.path.dirname(upaths.data_root)
    if not os.path.isdir(upaths.data_root):
        return None
    size = tree_bytes(upaths.data_root, deadline)
    if size is not None:
        atomic_write(os.path.join(state, DISK_CACHE), f"{size} {now()}\n", mode=0o600)
    return size


def cached_disk(cfg, name):
    """(bytes, when measured) of the user's data-root, as the last reaper pass found it, or None."""
    from berth.core import paths

    return _read_sample(os.path.join(os.path.dirname(paths.for_user(cfg, name).data_root), DISK_CACHE))


def parse_gpu_apps(text):
    """nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -> [(pid, MiB)]. Pure."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            out.append((int(parts[0]), int(parts[1]) if parts[1].isdigit() else 0))
    return out


def owner_of(pid, proc="/proc"):
    """The berth user whose container a process runs in, by its cgroup, or None."""
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    marker, slices = f"/{cgroups.PARENT}/", f"/{cgroups.PARENT}.slice/{cgroups.PARENT}-"
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if path.startswith(marker):
            return path[len(marker):].split("/", 1)[0]
        if path.startswith(slices):  # systemd's driver: berth.slice/berth-<user>.slice/docker-<id>.scope
            return path[len(slices):].split("/", 1)[0].removesuffix(".slice").replace("\\x2d", "-")
    return None


def gpu_processes(timeout=5.0):
    """{user: [(pid, MiB)]} of GPU compute processes in users' containers,
    or None where there is no nvidia-smi (no NVIDIA GPU, or no driver)."""
    smi = shutil.which("nvidia-smi", path="/usr/bin:/usr/local/bin:/usr/sbin:/bin")
    if smi is None:
        return None
    try:
        r = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    out = {}
    for pid, mib in parse_gpu_apps(r.stdout):
        user = owner_of(pid)
        if user is not None:
            out.setdefault(user, []).append((pid, mib))
    return out
