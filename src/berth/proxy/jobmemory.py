"""A Slurm job's memory limit, copied into berth's cgroup of the job once
Slurm's own cgroup of the job holds it.

Slurm 22.05 tells the Prolog no memory of the job, and makes its cgroup
of the job only after the Prolog (even with PrologFlags=Contain), so the
Prolog cannot hold berth's cgroup of the job to it. Its grant names
instead where Slurm's limit will be (glob patterns of its
memory.limit_in_bytes or memory.max) and the file of berth's cgroup that
takes it (jobgrant: slurm_memory, memory_file). Before a create or a
start on the job's socket, until the limit has been copied, the proxy
reads the one and writes the other, so the container runs held to the
job's memory. The paths come from the grant alone (root's), never from a
request. A missing or unreadable file leaves everything as it is, with a
log line: the job's containers are still held to their user's limit.
"""

import glob
import logging

from berth.core.limits import memory_limit

log = logging.getLogger("berth.proxy")


def slurm_limit(patterns, find=glob.glob):
    """The memory limit in the first file `patterns` find, in bytes; 0 for
    none (no such file yet, an unreadable one, or no limit in it)."""
    for pattern in patterns:
        for path in sorted(find(pattern)):
            try:
                with open(path) as f:
                    return memory_limit(f.read())
            except OSError as e:
                log.warning("the job's memory limit in %s cannot be read: %s", path, e.strerror)
                return 0
    return 0


class JobMemory:
    """One job socket's copy of its job's memory limit: made once, then remembered."""

    def __init__(self, job_id, patterns, target):
        self.job_id = job_id
        self.patterns = tuple(patterns)
        self.target = target
        self.copied = 0  # bytes, once berth's cgroup of the job holds them
        self.told = False  # that Slurm's cgroup holds none yet: logged once

    def ensure(self):
        """Hold berth's cgroup of the job to the job's memory limit where
        Slurm's cgroup of the job now holds one; the limit (0: none yet)."""
        if self.copied:
            return self.copied
        limit = slurm_limit(self.patterns)
        if not limit:
            if not self.told:
                self.told = True
                log.info("job %s: no memory limit in Slurm's cgroup of the job (yet: %s); its containers are "
                         "held to their user's", self.job_id, " or ".join(self.patterns))
            return 0
        try:
            with open(self.target, "w") as f:
                f.write(str(limit))
        except OSError as e:
            log.warning("job %s: its memory limit (%d bytes) cannot be set on %s: %s", self.job_id, limit,
                        self.target, e.strerror)
            return 0
        self.copied = limit
        log.info("job %s: its containers are held to its memory limit, %d bytes (%s)", self.job_id, limit,
                 self.target)
        return limit


def for_grant(grant):
    """The JobMemory of a job's socket, or None when its grant has the
    memory already (the Prolog found Slurm's cgroup) or names no files."""
    if grant.memory or not grant.slurm_memory or not grant.memory_file:
        return None
    return JobMemory(grant.job_id, grant.slurm_memory, grant.memory_file)
