"""A job's GPUs as the nvidia runtime names them, from Slurm's indices.
Pure, but for `nvidia_smi` and `device_numbers`, which gather the facts.

index (SLURM_JOB_GPUS) -> device file (gres.conf, gres.py) -> its minor
number (/dev/nvidiaN is character device 195:N) -> the GPU's UUID, from
nvidia-smi's table of minor numbers, where nvidia-smi exists. Without it
(no driver: a node without GPUs, the tests' fake ones) a GPU is named by
its minor number, which is the index NVIDIA_VISIBLE_DEVICES means on a
node whose GPUs enumerate in minor order. With gres.conf's AutoDetect,
Slurm's index is NVML's, and so nvidia-smi's `index`.
"""

import os
import subprocess
from collections import namedtuple

# One row of nvidia-smi's table: index, minor number (None: "[N/A]"), UUID.
SmiGpu = namedtuple("SmiGpu", "index minor uuid")

QUERY = ["--query-gpu=index,minor_number,uuid", "--format=csv,noheader"]


class UnknownGpu(ValueError):
    """Slurm named a GPU berth cannot find on this node."""


def parse_smi(text):
    """nvidia-smi's csv rows -> [SmiGpu]."""
    rows = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0].isdigit():
            continue
        rows.append(SmiGpu(int(fields[0]), int(fields[1]) if fields[1].isdigit() else None, fields[2]))
    return rows


def resolve(indices, layout, devices, smi):
    """[(name, minor number or None)] of the GPUs at Slurm's `indices`: the
    name the nvidia runtime knows each by, and its /dev/nvidia<minor>.

    layout: gres.GpuLayout; devices: {file: minor number, or None when it
    is missing or no character device}; smi: nvidia-smi's rows, or None
    where there is no nvidia-smi. Raises UnknownGpu."""
    files = layout.files
    if layout.autodetect and files:
        # slurmd sorts what it detected by NVML's links, that is PCI bus order: the minors' order.
        files = sorted(files, key=lambda f: (devices.get(f) is None, devices.get(f) or 0))
    out = []
    for index in indices:
        if layout.autodetect and not files:
            if smi is None:
                out.append((str(index), None))
                continue
            row = next((r for r in smi if r.index == index), None)
            if row is None:
                raise UnknownGpu(f"GPU {index} of the job is not among nvidia-smi's {len(smi)}")
            out.append((row.uuid, row.minor))
            continue
        if index >= len(files):
            raise UnknownGpu(f"GPU {index} of the job, but gres.conf lists {len(files)} GPU file(s) "
                             f"for this node")
        path = files[index]
        minor = devices.get(path)
        if minor is None:
            raise UnknownGpu(f"{path} (GPU {index} in gres.conf) is no character device")
        if smi is None:
            out.append((str(minor), minor))
            continue
        row = next((r for r in smi if r.minor == minor), None)
        if row is None:
            raise UnknownGpu(f"nvidia-smi knows no GPU of minor number {minor} ({path})")
        out.append((row.uuid, minor))
    return out


def device_files(resolved):
    """The device files of resolved GPUs (those whose minor is known)."""
    return tuple(f"/dev/nvidia{minor}" for _, minor in resolved if minor is not None)


def device_numbers(files):
    """{file: its minor number, or None} for the files named."""
    import stat

    out = {}
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            out[path] = None
            continue
        out[path] = os.minor(st.st_rdev) if stat.S_ISCHR(st.st_mode) else None
    return out


def nvidia_smi(path, timeout=30):
    """nvidia-smi's rows, or None where there is no nvidia-smi. Raises
    UnknownGpu when it is there but does not answer (a driver fault)."""
    if path is None:
        return None
    try:
        r = subprocess.run([path, *QUERY], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UnknownGpu(f"{path} did not answer ({e})") from None
    if r.returncode != 0:
        raise UnknownGpu(f"{path} failed: {(r.stderr or r.stdout).strip()[:200]}")
    return parse_smi(r.stdout)
