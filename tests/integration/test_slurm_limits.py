"""A Slurm job's cgroups and berth, on a private Slurm that holds jobs to
them (task/cgroup, proctrack/cgroup, cgroup v1, PrologFlags=Alloc,Contain):
`srun --mem=… -c …` and the job's containers run in berth's cgroup of the
job, held to the same; a login pam_slurm_adopt puts into the job starts no
daemon inside it."""

import json
import os
import re
import tempfile

import pytest
from conftest import DEBIAN_CLI, STOCK_SSHD_PAM, Sshd
from slurm_cluster import SlurmCluster, missing, no_cgroup_v1
from test_slurm import IMAGE, Jobs, Transcript, assert_node_serves, install_hooks, slurm_config

from berth.proxy import control

pytestmark = pytest.mark.skipif((missing() or no_cgroup_v1()) is not None,
                                reason=f"slurm with cgroups: {missing() or no_cgroup_v1()}")

MEMORY = 100 * 1024 * 1024
PAM_SLURM_ADOPT = "/lib/security/pam_slurm_adopt.so"  # Debian's libpam-slurm-adopt puts it there


@pytest.fixture(scope="module")
def slurm(harness):
    cluster = SlurmCluster(parent=harness.root, hooks=install_hooks(harness, slurm_config(harness)), cgroups=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def job(slurm, harness):
    """A job of one core and 100M, with a container running through its socket."""
    jobs = Jobs(slurm, harness, harness.add_user(), Transcript())
    job = jobs.allocate("--mem=100M", "-c", "1")
    harness.import_busybox(jobs.user, IMAGE)
    container = jobs.step(job, DEBIAN_CLI, "run", "-d", IMAGE, "sleep", "600").stdout.strip()
    inspect = json.loads(jobs.step(job, DEBIAN_CLI, "inspect", container).stdout)[0]
    yield jobs, job, inspect
    jobs.cancel(job)
    assert_node_serves(slurm)


def test_a_jobs_containers_run_in_berths_cgroup_of_the_job(job):
    jobs, job_id, inspect = job
    parent = inspect["HostConfig"]["CgroupParent"]
    assert re.search(rf"/{jobs.user}/job-{job_id}$", parent), parent
    assert os.path.isdir(f"/sys/fs/cgroup/memory{parent}")


def test_berths_cgroup_of_the_job_is_held_to_its_cores(job):
    """One CPU of the node's two (from SLURM_JOB_CPUS_PER_NODE: Slurm's cgroup comes after the Prolog)."""
    jobs, job_id, inspect = job
    parent = inspect["HostConfig"]["CgroupParent"]
    with open(f"/sys/fs/cgroup/cpu{parent}/cpu.cfs_quota_us") as f:
        quota = int(f.read())
    with open(f"/sys/fs/cgroup/cpu{parent}/cpu.cfs_period_us") as f:
        assert quota == int(f.read())


def test_berths_cgroup_of_the_job_is_held_to_its_memory(job):
    """Slurm 22.05 tells the Prolog no memory and makes its cgroup of the job
    after it: the proxy copied the job's limit at the first create."""
    jobs, job_id, inspect = job
    parent = inspect["HostConfig"]["CgroupParent"]
    with open(f"/sys/fs/cgroup/memory{parent}/memory.limit_in_bytes") as f:
        assert int(f.read()) == MEMORY
    stats = control.stats(os.path.join(jobs.h.root, "run"))
    assert stats[jobs.user]["jobs"][job_id]["memory"] == MEMORY


def test_a_container_past_the_jobs_memory_is_oom_killed(job):
    """dd's one buffer is the size of its block (no swap here: past the limit, the OOM killer)."""
    jobs, job_id, _ = job
    def dd(size):
        return jobs.step(job_id, DEBIAN_CLI, "run", "--rm", IMAGE, "busybox", "dd", "if=/dev/zero", "of=/dev/null",
                         f"bs={size}", "count=1", check=False)
    fits = dd("40M")
    assert fits.returncode == 0, fits.stderr
    past = dd("200M")
    assert past.returncode == 137, (past.returncode, past.stderr)


def adopting_sshd(harness, slurm):
    """The test sshd, with pam_slurm_adopt last in its account stack,
    reading this cluster's slurm.conf (SLURM_CONF in sshd's environment)."""
    with open(STOCK_SSHD_PAM) as f:
        stock = f.read()
    pam = stock.replace("@include common-account\n",
                        f"@include common-account\naccount    required     {PAM_SLURM_ADOPT} log_level=debug\n")
    assert pam != stock
    fd, path = tempfile.mkstemp(prefix="sshd-adopt-", dir=harness.root)
    with os.fdopen(fd, "w") as f:
        f.write(pam)
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = slurm.conf
    try:
        return Sshd(harness, stock=path)
    finally:
        if before is None:
            del os.environ["SLURM_CONF"]
        else:
            os.environ["SLURM_CONF"] = before


@pytest.mark.skipif(not os.path.exists(PAM_SLURM_ADOPT), reason="pam_slurm_adopt missing (apt-get install "
                    "libpam-slurm-adopt)")
def test_a_login_adopted_into_the_job_starts_no_daemon_inside_it(job, slurm, harness):
    """The daemon down while the job runs (killed), a login adopted into the
    job starts it: out of the job's cgroups, or it would die with the job."""
    jobs, job_id, _ = job
    harness.crash_daemon(jobs.user)
    sshd = adopting_sshd(harness, slurm)
    try:
        sshd.authorize(jobs.user)
        # what a login shell reads (/etc/profile.d/berth.sh as `berth install` wrote it) gives the job's socket
        profile = os.path.join(harness.root, "install-root", "etc", "profile.d", "berth.sh")
        r = sshd.ssh(jobs.user, f"cat /proc/self/cgroup; . {profile}; echo DOCKER_HOST=$DOCKER_HOST")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"/job_{job_id}/step_extern" in r.stdout, r.stdout  # adopted into the job
        assert f"DOCKER_HOST=unix://{jobs.socket(job_id)}" in r.stdout, r.stdout
        (pid,) = harness.dockerd_pids(jobs.user)
        with open(f"/proc/{pid}/cgroup") as f:
            daemon = f.read()
        assert "job_" not in daemon, daemon
    finally:
        sshd.close()
