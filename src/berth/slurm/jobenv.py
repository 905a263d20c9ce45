"""The job a Slurm hook runs for, from the environment slurmd gives it.
Pure.

slurmd builds the Prolog's and Epilog's environment itself (no PATH; a
user's SPANK variables only under a SPANK_ prefix): SLURM_JOB_ID,
SLURM_JOB_USER, SLURM_JOB_UID, SLURM_CONF, SLURMD_NODENAME, SLURM_NODELIST
and SLURM_JOB_CPUS_PER_NODE (the job's CPUs, node by node), and
SLURM_JOB_GPUS, the job's GPUs on this node as indices into gres.conf's
GPU devices (gres.py), absent when it has none. Not the job's memory. See Slurm's
prolog_epilog.shtml, and _build_env in src/plugins/prep/script/.
"""

from collections import namedtuple

from berth.core import users

DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"

# job_id: int; user: the owner's name; uid: int; gpus: gres indices (ints,
# in Slurm's order); slurm_conf: slurm.conf's path (gres.conf lies beside
# it); node: this node's name in slurm.conf ("" when not given); cpus: the
# CPUs the job was allocated on this node (0: not said).
Job = namedtuple("Job", "job_id user uid gpus slurm_conf node cpus", defaults=(0,))


class BadJobEnvironment(ValueError):
    pass


def _number(environ, key):
    value = environ.get(key, "")
    if not value.isdigit():
        raise BadJobEnvironment(f"{key} is {value!r}, not a number" if value else f"{key} is not set")
    return int(value)


def gpu_indices(text):
    """SLURM_JOB_GPUS ("0,2", "" for none) -> (0, 2)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise BadJobEnvironment(f"SLURM_JOB_GPUS is {text!r}: not a list of GPU indices")
        out.append(int(part))
    return tuple(out)


def cpus_on_node(cpus_per_node, nodelist, node):
    """This node's CPUs from SLURM_JOB_CPUS_PER_NODE ("4(x2),2": one count
    per node of SLURM_NODELIST, in its order, runs compressed); 0 when the
    node is not found or the text is not Slurm's."""
    from berth.slurm import gres

    counts = []
    for part in cpus_per_node.split(","):
        count, _, repeat = part.partition("(x")
        if not count.isdigit() or (repeat and not repeat.rstrip(")").isdigit()):
            return 0
        counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
    try:
        nodes = gres.expand(nodelist) if nodelist else []
    except ValueError:
        return 0
    if node in nodes and nodes.index(node) < len(counts):
        return counts[nodes.index(node)]
    return counts[0] if len(counts) == 1 and not nodes else 0


def job_id(environ):
    return _number(environ, "SLURM_JOB_ID")


def read(environ):
    """The Prolog's or Epilog's job. Raises BadJobEnvironment when slurmd
    did not say what berth needs (a hook run by hand, or not by slurmd)."""
    user = environ.get("SLURM_JOB_USER", "")
    if not users.is_valid_name(user):
        raise BadJobEnvironment(f"SLURM_JOB_USER is {user!r}, not a user name")
    node = environ.get("SLURMD_NODENAME", "")
    return Job(job_id(environ), user, _number(environ, "SLURM_JOB_UID"),
               gpu_indices(environ.get("SLURM_JOB_GPUS", "")),
               environ.get("SLURM_CONF") or DEFAULT_SLURM_CONF, node,
               cpus_on_node(environ.get("SLURM_JOB_CPUS_PER_NODE", ""),
                            environ.get("SLURM_NODELIST") or environ.get("SLURM_JOB_NODELIST", ""), node))
