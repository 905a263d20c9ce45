"""What a Slurm job was granted on this node, as the Prolog writes it for
the proxy to read (`job-<id>.grant` in the user's run dir, root's 0600).
Pure.

The proxy serves the job's socket (`job-<id>.sock`) with it: the job's
GPUs are the only ones its containers get, and every container made
through that socket carries the label LABEL=<id>, by which the Epilog
removes them.
"""

from collections import namedtuple

from berth.core import keyvalue

LABEL = "berth.job"

# job_id: Slurm's job id; user/uid: the job's owner (who may connect);
# gpus: the granted GPUs as the nvidia runtime names them (UUIDs where
# nvidia-smi exists on the node, indices otherwise), in the order Slurm
# gave them; memory: the job's memory limit in bytes (0: none known);
# nano_cpus: its CPU limit in 1e-9 CPUs (0: none known); cgroup: the
# cgroup-parent of the job's containers, which the Prolog made below the
# user's and held to the job's limits ("": the user's own, as on the login
# socket). devices: the granted GPUs' device files (/dev/nvidia<minor>),
# which `--device` may name on the job's socket (none listed: `--device
# /dev/nvidia<N>` is refused there, and --gpus is the way). error: why the
# job has no daemon on this node, a failure of the user's and not the
# node's (no free address block, say), as one line "what; what to do":
# the job's socket then answers every request with it ("" : none).
# slurm_memory: where Slurm's cgroup of the job will hold its memory limit
# (glob patterns of its memory.limit_in_bytes or memory.max), and
# memory_file: the file that holds the limit of berth's cgroup of the
# job, when the Prolog could not tell the job's memory (Slurm makes its
# cgroup after the Prolog): the proxy copies the one into the other once
# it exists (jobmemory). Root wrote both, as the rest of the grant.
Grant = namedtuple("Grant", "job_id user uid gpus memory nano_cpus cgroup devices error slurm_memory memory_file",
                   defaults=(0, 0, "", (), "", (), ""))


class BadGrant(ValueError):
    pass


def render(grant):
    for name in (*grant.gpus, *grant.devices):
        if not name or "," in name or any(c.isspace() for c in name):
            raise ValueError(f"a GPU name cannot be written in a grant: {name!r}")
    for path in (*grant.slurm_memory, grant.memory_file):
        if "," in path or any(c.isspace() for c in path) or (path and not path.startswith("/")):
            raise ValueError(f"a cgroup file cannot be written in a grant: {path!r}")
    return keyvalue.render({"job": int(grant.job_id), "user": grant.user, "uid": int(grant.uid),
                            "gpus": ",".join(grant.gpus), "memory": int(grant.memory),
                            "nano_cpus": int(grant.nano_cpus), "cgroup": grant.cgroup,
                            "devices": ",".join(grant.devices), "error": grant.error,
                            "slurm_memory": ",".join(grant.slurm_memory), "memory_file": grant.memory_file})


def parse(text):
    try:
        fields = keyvalue.parse(text)
        return Grant(int(fields["job"]), fields["user"], int(fields["uid"]),
                     tuple(g for g in fields["gpus"].split(",") if g),
                     int(fields.get("memory", 0)), int(fields.get("nano_cpus", 0)), fields.get("cgroup", ""),
                     tuple(d for d in fields.get("devices", "").split(",") if d), fields.get("error", ""),
                     tuple(p for p in fields.get("slurm_memory", "").split(",") if p), fields.get("memory_file", ""))
    except (KeyError, ValueError) as e:
        raise BadGrant(f"unreadable job grant ({e})") from None
