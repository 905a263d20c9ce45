"""Which device file each of a node's GPUs is, as Slurm numbers them. Pure.

SLURM_JOB_GPUS holds indices into the node's GPU devices in the order
slurmd loaded them from gres.conf (src/plugins/gres/common/gres_common.c,
common_node_config_load), not in nvidia-smi's order: the `Name=gpu`
lines first, then the `NodeName=` lines that name this node, each in the
file's order, each `File=` expanded like a hostlist (/dev/nvidia[0-3]).
A MultipleFiles= line is one GPU. With AutoDetect (nvml, rsmi, ...)
slurmd finds the GPUs itself, in NVML's order (PCI bus order), which is
nvidia-smi's: gres.conf then lists no files to go by (`autodetect`).

Not followed: the order of a node's GPU types in slurm.conf's Gres= when
it differs from gres.conf's (gres.conf's order is taken), and Include.
"""

import re
from collections import namedtuple

# files: the GPU device files in Slurm's index order; autodetect: slurmd
# finds the GPUs itself (files then lists only what gres.conf adds).
GpuLayout = namedtuple("GpuLayout", "files autodetect")


def expand(text):
    """A hostlist expression ("node[01-03],gpu5", "/dev/nvidia[0,2-3]") -> its names, in order."""
    names = []
    for part in _top_level_split(text):
        names += _expand_one(part)
    return names


def _top_level_split(text):
    parts, depth, current = [], 0, ""
    for c in text:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += c
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def _expand_one(name):
    m = re.search(r"\[([^\]]*)\]", name)
    if m is None:
        return [name]
    head, tail = name[:m.start()], name[m.end():]
    out = []
    for item in m.group(1).split(","):
        lo, sep, hi = item.partition("-")
        if not sep:
            numbers = [lo]
        else:
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                raise ValueError(f"bad range [{m.group(1)}] in {name!r}")
            width = len(lo) if lo.startswith("0") else 0  # node[01-10]: zero-padded
            numbers = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
        out += [head + n + rest for n in numbers for rest in _expand_one(tail)]
    return out


def records(text):
    """gres.conf as a list of {key (lower case): value} records, one per
    line (a trailing backslash joins the next), comments dropped."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        record = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep:
                record[key.lower()] = value
        if record:
            out.append(record)
    return out


def gpu_layout(text, node):
    """The GPU device files of `node` in Slurm's index order (GpuLayout)."""
    recs = records(text)
    autodetect = False
    for r in recs:
        if "autodetect" in r and ("nodename" not in r or node in expand(r["nodename"])):
            autodetect = r["autodetect"].lower() not in ("off", "none", "")
    own = [r for r in recs if "nodename" not in r] + [r for r in recs if "nodename" in r
                                                       and node in expand(r["nodename"])]
    files = []
    for r in own:
        if r.get("name", "").lower() != "gpu":
            continue
        if "multiplefiles" in r:
            files.append(expand(r["multiplefiles"])[0])
        elif "file" in r or "files" in r:
            files += expand(r.get("file") or r["files"])
    return GpuLayout(tuple(files), autodetect)
