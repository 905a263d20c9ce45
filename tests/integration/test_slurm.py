"""berth on a real one-node Slurm (slurm_cluster.py): Debian's slurmctld,
slurmd and munge, private to this module, with two fake GPUs, and berth's
hooks as `berth install --slurm` writes them (the Prolog linked into a
prolog.d glob beside a site's own script, as its advice says).

The tests run in file order on one cluster, one user and two long jobs
(salloc --no-shell: an allocation whose Prolog runs at once, PrologFlags=
Alloc, and whose steps are srun --jobid): the first job of the module meets
the user down, the next ones a daemon up, two jobs start at once; job A is
cancelled first, then B, then the daemon's end is checked with and without
an open session. Every job's docker command finds DOCKER_HOST from the
TaskProlog, nothing set by hand.
"""

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest
from conftest import DEBIAN_CLI, DOCKER_CLIS, STOCK_SSHD_PAM, Login, PamService, PamSession
from slurm_cluster import SlurmCluster, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"slurm: {missing()}")

TRANSCRIPT = "/tmp/slurm-transcript.txt"
IMAGE = "bt-busybox:1"
# The Epilog lets the daemon go by the reaper's rule; with no idle time
# allowed, that is at the user's last job when no session is open.
SLURM_CONFIG = "[slurm]\nenabled = true\n[reaper]\nidle_timeout = 0\n"


class Transcript:
    """Commands run and what they printed, for the closing note."""

    def __init__(self):
        self.lines = []

    def add(self, who, argv, r):
        self.lines.append(f"[{who}]$ {shlex.join(argv)}")
        self.lines += [f"  {line}" for line in (r.stdout + r.stderr).splitlines()]
        if r.returncode:
            self.lines.append(f"  (exit {r.returncode})")

    def note(self, text):
        self.lines.append(f"# {text}")

    def save(self, path=TRANSCRIPT):
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")


def slurm_config(harness):
    """The module's berth.toml, with [slurm] enabled: the login hook and the Slurm hooks read it alike."""
    # A pool of two blocks: the module's user and a second one get theirs, a third finds none.
    harness.pool = next(harness.pool.subnets(new_prefix=23))
    harness.write_config("berth.toml", extra=SLURM_CONFIG)
    harness.configs.pop()  # the same path, listed once already
    return harness.config


def install_hooks(harness, config, transcript=None):
    """{slurm.conf key: program}: the lines `berth install --slurm` prints,
    its wrappers written into a scratch root (a copy of the host's PAM dir
    with Debian's stock sshd, which the install edits too)."""
    root = os.path.join(harness.root, "install-root")
    shutil.copytree("/etc/pam.d", os.path.join(root, "etc", "pam.d"), symlinks=True)
    shutil.copy(STOCK_SSHD_PAM, os.path.join(root, "etc", "pam.d", "sshd"))
    # The TaskProlog runs as the job's user: the wrappers' interpreter must be one they reach.
    argv = ["install", "--slurm", "--root", root, "--python", harness.hook_python()]
    r = harness.berth(*argv, config=config)
    if transcript:
        transcript.add("root", ["berth", *argv], r)
    lines = dict(re.findall(r"^\s*(Prolog|Epilog|TaskProlog|PrologFlags)=(\S+)$", r.stdout, re.M))
    assert set(lines) == {"Prolog", "Epilog", "TaskProlog", "PrologFlags"}, r.stdout
    assert "Alloc" in lines.pop("PrologFlags").split(",")
    return {key: os.path.join(root, path.lstrip("/")) for key, path in lines.items()}


@pytest.fixture(scope="module")
def config(harness):
    return slurm_config(harness)


@pytest.fixture(scope="module")
def hooks(harness, config, transcript):
    return install_hooks(harness, config, transcript)


@pytest.fixture(scope="module")
def slurm(harness, hooks, site_prolog):
    """The node: its Prolog a glob (a site's own script, and a link to
    berth's wrapper, as `berth install --slurm` says); Epilog= and
    TaskProlog= the wrappers themselves."""
    prolog_d = os.path.dirname(site_prolog)
    os.symlink(hooks["Prolog"], os.path.join(prolog_d, "50-berth"))
    cluster = SlurmCluster(parent=harness.root, hooks={**hooks, "Prolog": f"{prolog_d}/*"})
    cluster.start()
    print(f"slurm up in {cluster.startup_seconds:.2f} s", file=sys.stderr)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def site_prolog(harness):
    """A site's own Prolog, beside berth's in a prolog.d: it notes each job it saw."""
    d = os.path.join(harness.root, "prolog.d")
    os.makedirs(d)
    path = os.path.join(d, "10-site")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho $SLURM_JOB_ID >> {harness.root}/site-prolog.out\n")
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def user(harness):
    return harness.add_user()


@pytest.fixture(scope="module")
def transcript(harness):
    t = Transcript()
    yield t
    t.note("the hooks' own lines in berth's log (the Prolog's time is its own figure)")
    try:
        with open(os.path.join(harness.root, "log", "berth.log")) as f:
            t.lines += [f"  {line.rstrip()}" for line in f if re.search(r"job \d+ of ", line)]
    except FileNotFoundError:
        pass
    t.save()


def assert_node_serves(slurm):
    """The node took no benign condition for a failure: not drained, not down."""
    state = slurm.node_state()
    assert not re.search(r"DRAIN|DOWN|FAIL|NOT_RESPONDING", state), (state, slurm.node_info().get("Reason"))
    sinfo = slurm.run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.strip()
    assert sinfo in ("idle", "mixed", "allocated", "completing"), sinfo


class Jobs:
    """A user's long jobs and their steps, each command in the transcript."""

    def __init__(self, slurm, harness, user, transcript):
        self.slurm, self.h, self.user, self.t = slurm, harness, user, transcript

    def run(self, argv, check=True, timeout=120):
        r = self.slurm.run(argv, user=self.user, check=False, timeout=timeout)
        self.t.add(self.user, argv, r)
        if check and r.returncode:
            raise AssertionError(f"{shlex.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}\n"
                                 + self.slurm.log_tail("slurmd"))
        return r

    def root(self, argv):
        """A look as root (the node's state, the user's run dir), in the transcript too."""
        r = self.slurm.run(argv, check=False)
        self.t.add("root", argv, r)
        return r

    def run_dir(self):
        return self.root(["ls", f"{self.h.root}/run/{self.user}"]).stdout.split()

    def allocate(self, *args):
        r = self.run(["salloc", "--no-shell", "--gres=gpu:1", *args])
        return re.search(r"Granted job allocation (\d+)", r.stderr).group(1)

    def step(self, job, *argv, check=True):
        return self.run(["srun", f"--jobid={job}", "--overlap", *argv], check=check)

    def gpu_index(self, job):
        """The gres index Slurm gave the job (gres.conf's order; here also the device's minor)."""
        out = self.slurm.run(["scontrol", "show", "job", "-d", job]).stdout
        return re.search(r"gpu(?::\w+)?:1\(IDX:(\d+)\)", out).group(1)

    def cancel(self, job):
        self.run(["scancel", job])
        self.slurm.wait_for(lambda: job not in self.slurm.jobs(), f"job {job} to end (its Epilog)", timeout=90)

    def socket(self, job):
        return f"{self.h.root}/run/{self.user}/job-{job}.sock"


@pytest.fixture(scope="module")
def jobs(slurm, harness, user, transcript):
    j = Jobs(slurm, harness, user, transcript)
    yield j
    for job in slurm.jobs(user):
        slurm.run(["scancel", job], check=False)


def device_requests(jobs, job, container, cli=DEBIAN_CLI):
    out = jobs.step(job, cli, "inspect", "--format", "{{json .HostConfig.DeviceRequests}}", container).stdout
    return json.loads(out)


# --- the tests, in order ---------------------------------------------------------


def test_a_job_runs_as_a_test_user_on_a_node_with_two_gpus_and_a_prolog_of_the_sites(slurm, harness, user):
    assert slurm.node_info()["Gres"] == "gpu:2"
    # the module's first job: the user's daemon is down, the Prolog starts it
    assert not harness.dockerd_pids(user)
    me, host = slurm.srun(user, "sh", "-c", "id -un; echo $DOCKER_HOST").stdout.split()
    assert me == user and re.fullmatch(rf"unix://{harness.root}/run/{user}/job-\d+\.sock", host), host
    with open(f"{harness.root}/site-prolog.out") as f:  # the site's own Prolog ran too
        assert f.read().split() == [re.search(r"job-(\d+)", host).group(1)]
    assert_node_serves(slurm)


@pytest.fixture(scope="module")
def two_jobs(jobs, harness, slurm, transcript):
    """Jobs A and B of one user, started at once (two Prologs racing for a daemon that is down)."""
    # the module's first job ended with no session open: the user is down
    slurm.wait_for(lambda: not harness.dockerd_pids(jobs.user), "the first job's Epilog to stop the daemon")
    transcript.note(f"two jobs of {jobs.user}, each with one GPU, started at once; the user's daemon is down")
    found = {}

    def allocate(name):
        found[name] = jobs.allocate()
    threads = [threading.Thread(target=allocate, args=(n,)) for n in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = sorted(found.values(), key=int)
    assert_node_serves(slurm)
    harness.import_busybox(jobs.user, IMAGE)
    return a, b


def test_two_jobs_of_one_user_get_different_gpus(jobs, two_jobs, slurm, harness):
    a, b = two_jobs
    for job in (a, b):
        assert jobs.step(job, "sh", "-c", "echo $DOCKER_HOST").stdout.strip() == f"unix://{jobs.socket(job)}"
    index = {job: jobs.gpu_index(job) for job in (a, b)}
    assert index[a] != index[b]
    for job in (a, b):
        for _, cli in DOCKER_CLIS:  # what each sends for --gpus all, rewritten alike
            container = jobs.step(job, cli, "create", "--gpus", "all", IMAGE, "true").stdout.strip()
            (request,) = device_requests(jobs, job, container)
            assert request["DeviceIDs"] == [index[job]], request
            config = json.loads(jobs.step(job, DEBIAN_CLI, "inspect", "--format", "{{json .Config}}",
                                          container).stdout)
            assert config["Labels"]["berth.job"] == job
            assert f"NVIDIA_VISIBLE_DEVICES={index[job]}" in config["Env"]
    assert_node_serves(slurm)


def test_a_job_is_refused_the_other_jobs_gpu(jobs, two_jobs, slurm):
    a, b = two_jobs
    other = jobs.gpu_index(b)
    r = jobs.step(a, DEBIAN_CLI, "create", "--gpus", f"device={other}", IMAGE, "true", check=False)
    assert r.returncode != 0
    assert "berth:" in r.stderr and jobs.gpu_index(a) in r.stderr, r.stderr
    r = jobs.step(a, DEBIAN_CLI, "create", "--device", f"/dev/nvidia{other}", IMAGE, "true", check=False)
    assert r.returncode != 0 and "berth:" in r.stderr, r.stderr
    assert_node_serves(slurm)


def test_the_login_socket_gets_no_gpu_on_a_slurm_node(harness, user, two_jobs):
    r = harness.docker(user, "create", "--gpus", "all", IMAGE, "true", cli=DEBIAN_CLI, check=False)
    assert r.returncode != 0 and "outside a Slurm job" in r.stderr, r.stderr


def test_scancel_removes_that_jobs_containers_and_socket_only(jobs, two_jobs, slurm, harness, transcript):
    a, b = two_jobs
    running = {job: jobs.step(job, DEBIAN_CLI, "run", "-d", IMAGE, "sleep", "600").stdout.strip() for job in (a, b)}
    listing = [DEBIAN_CLI, "-H", f"unix://{harness.sock(jobs.user)}", "ps", "-a", "--format",
               '{{.ID}} {{.Label "berth.job"}} {{.Status}}']
    jobs.root(listing)
    assert {f"job-{a}.sock", f"job-{b}.sock"} <= set(jobs.run_dir())
    transcript.note(f"cancel job {a}: its containers and socket go, job {b}'s stay")
    jobs.cancel(a)
    remaining = jobs.root(listing).stdout.splitlines()
    assert not [line for line in remaining if line.split()[1:2] == [a]]
    assert [line for line in remaining if line.startswith(running[b][:12])]
    left = jobs.run_dir()
    assert f"job-{a}.sock" not in left and f"job-{a}.grant" not in left
    assert f"job-{b}.sock" in left
    jobs.root(["sinfo", "-N"])
    state = jobs.step(b, DEBIAN_CLI, "inspect", "--format", "{{.State.Running}}", running[b]).stdout.strip()
    assert state == "true"
    assert harness.dockerd_pids(jobs.user)
    assert_node_serves(slurm)


def test_the_daemon_stops_after_the_users_last_job(jobs, two_jobs, slurm, harness, transcript):
    a, b = two_jobs
    transcript.note(f"cancel job {b}, the user's last, with no session open: the daemon stops")
    transcript.note(f"dockerd of {jobs.user} before: pid {harness.dockerd_pids(jobs.user)}")
    jobs.cancel(b)
    assert not os.path.exists(jobs.socket(b))
    transcript.note(f"dockerd of {jobs.user} after: pid {harness.dockerd_pids(jobs.user)}")
    assert not harness.dockerd_pids(jobs.user)  # the Epilog's own doing: the job left squeue after it
    jobs.root(["sinfo", "-N"])
    assert_node_serves(slurm)


def test_the_daemon_stays_after_a_job_while_a_session_is_open(jobs, slurm, harness, config):
    service = _pam_service(harness, config)
    session = PamSession(service, jobs.user)
    assert session.open() == 0
    try:
        job = jobs.allocate()
        jobs.step(job, DEBIAN_CLI, "ps")
        jobs.cancel(job)
        assert harness.dockerd_pids(jobs.user), "the daemon stopped with a session open"
        assert_node_serves(slurm)
    finally:
        session.close()
        session.end()


def _pam_service(harness, config):
    confdir = tempfile.mkdtemp(prefix="pam.d-", dir=harness.root)
    name = f"berth-slurm-{harness.tag}"
    with open(os.path.join(confdir, name), "w") as f:
        f.write("auth required pam_permit.so\naccount required pam_permit.so\n"
                "session required pam_permit.so\n" + Login(harness, config).block)
    return PamService(name, confdir)


def test_srun_docker_ps_with_nothing_set_by_hand(slurm, user, docker_cli):
    r = slurm.srun(user, "--gres=gpu:1", "sh", "-c", f"echo $DOCKER_HOST; {docker_cli} ps")
    host, header = r.stdout.splitlines()[:2]
    assert re.fullmatch(r"unix://.*/job-\d+\.sock", host)
    assert header.startswith("CONTAINER ID")
    assert_node_serves(slurm)


def test_an_epilog_whose_prolog_never_ran_leaves_the_node_up(slurm, hooks, user):
    """As slurmd runs it (root, no PATH, the job's ids) for a job berth never saw."""
    env = {"SLURM_JOB_ID": "999999", "SLURM_JOB_USER": user, "SLURM_JOB_UID": str(pwd.getpwnam(user).pw_uid),
           "SLURM_SCRIPT_CONTEXT": "epilog_slurmd", "SLURM_CONF": slurm.conf}
    r = subprocess.run([hooks["Epilog"]], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_node_serves(slurm)


def test_an_epilog_after_the_daemon_died_leaves_the_node_up(jobs, slurm, harness):
    """dockerd killed mid-job (an OOM kill, say): the job still ends cleanly, its socket gone."""
    job = jobs.allocate()
    jobs.step(job, DEBIAN_CLI, "ps")
    harness.crash_daemon(jobs.user)
    jobs.cancel(job)
    assert not os.path.exists(jobs.socket(job))
    assert_node_serves(slurm)


def test_a_job_of_a_user_berth_does_not_serve_runs_as_before(slurm, harness):
    """nobody (above [users].max_uid): the hooks leave the job alone, the node too."""
    r = slurm.srun("nobody", "--gres=gpu:1", "sh", "-c", "echo DOCKER_HOST=$DOCKER_HOST")
    assert r.stdout.strip() == "DOCKER_HOST="
    assert not os.path.exists(f"{harness.root}/run/nobody")
    assert_node_serves(slurm)


def test_a_user_with_no_address_block_left_gets_a_job_whose_socket_says_so(slurm, harness, user):
    """A failure of the user's, not the node's: the job runs, its socket answers with why."""
    second, third = harness.add_user(), harness.add_user()
    slurm.srun(second, "--gres=gpu:1", DEBIAN_CLI, "ps")  # the pool's other block
    r = slurm.srun(third, "--gres=gpu:1", "sh", "-c", f"echo $DOCKER_HOST; {DEBIAN_CLI} ps", check=False)
    assert r.stdout.startswith(f"unix://{harness.root}/run/{third}/job-"), r.stdout
    assert r.returncode != 0 and "berth: " in r.stderr and "no free /24" in r.stderr, r.stderr
    assert not harness.dockerd_pids(third)
    assert_node_serves(slurm)
