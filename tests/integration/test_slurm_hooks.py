"""Slurm's Prolog and Epilog without Slurm: `berth slurm prolog|epilog` run
as root with the environment slurmd 22.05 gives them (no PATH; prep_script's
_build_env and the gres plugin's SLURM_JOB_GPUS), against real hardened
dockerds, with a gres.conf of two fake GPUs (character devices 195:0 and
195:1, which no driver answers) beside the slurm.conf SLURM_CONF names."""

import json
import os
import pwd
import stat
import subprocess
import sys
import time

import pytest
from conftest import DEBIAN_CLI

from berth.core import paths
from berth.proxy import jobgrant


@pytest.fixture(scope="module")
def node(harness):
    """A Slurm node's files: slurm.conf (only its directory is read), gres.conf, two fake GPUs."""
    d = os.path.join(harness.root, "slurm")
    os.makedirs(os.path.join(d, "dev"))
    for minor in (0, 1):
        os.mknod(os.path.join(d, "dev", f"nvidia{minor}"), 0o600 | stat.S_IFCHR, os.makedev(195, minor))
    with open(os.path.join(d, "slurm.conf"), "w") as f:
        f.write("# read by slurmd, not berth\n")
    with open(os.path.join(d, "gres.conf"), "w") as f:
        f.write(f"AutoDetect=off\nNodeName=node1 Name=gpu File={d}/dev/nvidia[0-1]\n")
    return d


@pytest.fixture(scope="module")
def config(harness):
    """idle_timeout 0: the reaper's rule lets a daemon go as soon as nothing uses it."""
    return harness.write_config("slurm.toml", extra="[slurm]\nenabled = true\n[reaper]\nidle_timeout = 0\n")


def job_env(node, user, job, gpus=""):
    uid = pwd.getpwnam(user).pw_uid
    env = {"SLURMD_NODENAME": "node1", "SLURM_CONF": os.path.join(node, "slurm.conf"),
           "SLURM_CLUSTER_NAME": "berthtest", "SLURM_JOB_ID": str(job), "SLURM_JOB_UID": str(uid),
           "SLURM_JOB_GID": str(pwd.getpwnam(user).pw_gid), "SLURM_JOB_USER": user, "SLURM_JOBID": str(job),
           "SLURM_UID": str(uid), "SLURM_JOB_WORK_DIR": "/", "SLURM_JOB_PARTITION": "main",
           "SLURM_NODELIST": "node1", "SLURM_JOB_CPUS_PER_NODE": "1", "SLURM_JOB_NUM_NODES": "1"}
    if gpus:
        env.update(SLURM_JOB_GPUS=gpus, CUDA_VISIBLE_DEVICES=gpus)
    return env


def hook(name, env, config, user=None, python=sys.executable):
    """As slurmd runs it (root, this environment and nothing else), or slurmstepd a TaskProlog (the user,
    who needs a `python` they reach: harness.hook_python())."""
    argv = [python, "-I", "-m", "berth", "slurm", name, "--config", config]
    if user:
        argv = ["/usr/sbin/runuser", "-u", user, "--", "/usr/bin/env", "-i",
                *(f"{k}={v}" for k, v in env.items()), *argv]
        env = {"PATH": "/usr/bin:/bin"}
    t0 = time.monotonic()
    r = subprocess.run(argv, env={**env, "SLURM_SCRIPT_CONTEXT": f"{name.replace('-', '_')}_slurmd"},
                       capture_output=True, text=True, timeout=180)
    r.seconds = time.monotonic() - t0
    return r


def grant_of(harness, user, job):
    path = paths.in_run_dir(f"{harness.root}/run", user).job_grant(job)
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    with open(path) as f:
        return jobgrant.parse(f.read())


def job_docker(harness, user, job, *args, check=True):
    sock = paths.in_run_dir(f"{harness.root}/run", user).job_socket(job)
    r = subprocess.run(["runuser", "-u", user, "--", DEBIAN_CLI, "-H", f"unix://{sock}", *args],
                       capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} on job {job}'s socket: {r.stdout}{r.stderr}")
    return r


def device_ids(harness, user, container):
    out = harness.docker(user, "inspect", container, cli=DEBIAN_CLI).stdout
    return [r["DeviceIDs"] for r in json.loads(out)[0]["HostConfig"]["DeviceRequests"] or []]


def test_two_jobs_get_their_own_gpus_and_the_epilog_takes_only_its_own(harness, node, config):
    user = harness.add_user()
    upaths = paths.in_run_dir(f"{harness.root}/run", user)
    first = hook("prolog", job_env(node, user, 101, "0"), config)  # the user is down: the Prolog starts them
    assert first.returncode == 0, first.stderr
    second = hook("prolog", job_env(node, user, 102, "1"), config)  # up already: the warm path
    assert second.returncode == 0, second.stderr
    print(f"Prolog: {first.seconds:.2f} s with the daemon down, {second.seconds:.2f} s with it up")

    a, b = grant_of(harness, user, 101), grant_of(harness, user, 102)
    assert (a.gpus, a.devices, a.cgroup) == (("0",), ("/dev/nvidia0",), f"/berth/{user}/job-101")
    assert (b.gpus, b.error) == (("1",), "")
    if (os.cpu_count() or 1) > 1:  # held to the one CPU the job was allocated (no cgroup of Slurm's here)
        assert a.nano_cpus == 1_000_000_000
        quota = [f"/sys/fs/cgroup/cpu/berth/{user}/job-101/cpu.cfs_quota_us",
                 f"/sys/fs/cgroup/berth/{user}/job-101/cpu.max"]
        with open(next(q for q in quota if os.path.exists(q))) as f:
            assert f.read().split()[0] == "100000"
    st = os.stat(upaths.job_socket(101))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam(user).pw_uid, 0o600)

    task = hook("task-prolog", {**job_env(node, user, 101), "HOME": "/"}, config, user=user,
                python=harness.hook_python())
    assert (task.returncode, task.stdout) == (0, f"export DOCKER_HOST=unix://{upaths.job_socket(101)}\n")

    image = harness.import_busybox(user)
    job_docker(harness, user, 101, "create", "--gpus", "all", "--name", "a-gpu", image)
    job_docker(harness, user, 101, "run", "-d", "--name", "a-runs", image, "sleep", "600")
    job_docker(harness, user, 102, "run", "-d", "--name", "b-runs", image, "sleep", "600")
    job_docker(harness, user, 102, "create", "--gpus", "all", "--name", "b-gpu", image)
    assert device_ids(harness, user, "a-gpu") == [["0"]] and device_ids(harness, user, "b-gpu") == [["1"]]
    other = job_docker(harness, user, 102, "create", "--gpus", "device=0", image, check=False)
    assert other.returncode != 0 and "berth:" in other.stderr

    end = hook("epilog", job_env(node, user, 101, "0"), config)
    assert end.returncode == 0, end.stderr
    names = harness.docker(user, "ps", "-a", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
    assert "a-gpu" not in names and "a-runs" not in names and {"b-runs", "b-gpu"} <= set(names)
    assert not os.path.exists(upaths.job_socket(101)) and not os.path.exists(upaths.job_grant(101))
    assert os.path.exists(upaths.job_socket(102))
    assert not [d for d in _cgroup_dirs(user) if d.endswith("/job-101")]
    assert harness.dockerd_pids(user), "job 102 still runs: the daemon stays"
    assert set(job_docker(harness, user, 102, "ps", "--format", "{{.Names}}").stdout.split()) == {"b-runs", "net"}

    end = hook("epilog", job_env(node, user, 102, "1"), config)
    assert end.returncode == 0, end.stderr
    assert harness.dockerd_pids(user) == [], "the user's last job ended and nothing else uses the daemon"
    assert not _cgroup_dirs(user, "job-")


def test_a_session_keeps_the_daemon_after_the_last_job(harness, node, config):
    from berth.lifecycle import activity

    user = harness.add_user()
    upaths = paths.in_run_dir(f"{harness.root}/run", user)
    assert hook("prolog", job_env(node, user, 201), config).returncode == 0
    login = subprocess.Popen(["sleep", "600"])  # stands for the sshd process of an open login
    try:
        activity.session_opened(upaths, login.pid)
        assert hook("epilog", job_env(node, user, 201), config).returncode == 0
        assert harness.dockerd_pids(user), "a session is open"
    finally:
        login.kill()
        login.wait()
    assert hook("prolog", job_env(node, user, 202), config).returncode == 0
    assert hook("epilog", job_env(node, user, 202), config).returncode == 0
    assert harness.dockerd_pids(user) == []


def test_an_epilog_whose_prolog_never_ran_and_users_berth_does_not_serve_drain_nothing(harness, node, config):
    user = harness.add_user()
    assert hook("epilog", job_env(node, user, 301), config).returncode == 0
    assert not os.path.exists(f"{harness.root}/run/{user}")
    for name in ("prolog", "epilog"):
        root_job = {**job_env(node, user, 302), "SLURM_JOB_USER": "root", "SLURM_JOB_UID": "0"}
        assert hook(name, root_job, config).returncode == 0


def test_a_users_failure_is_told_on_the_jobs_socket_and_the_node_stays_up(harness, node):
    """A pool of two blocks, both leased: the next user has none, which the job is told."""
    import ipaddress

    from berth.lifecycle import hostobjects as host

    two = list(ipaddress.ip_network(harness.pool).subnets(new_prefix=23))[-1]
    with open(harness.config) as f:
        text = f.read().replace(f'pool = "{harness.pool}"', f'pool = "{two}"').replace(
            f'state_dir = "{harness.root}/state"', f'state_dir = "{harness.root}/state-two-blocks"')
    config = os.path.join(harness.root, "two-blocks.toml")
    with open(config, "w") as f:
        f.write(text)
    harness.configs.append(config)
    cfg = harness.cfg(config)
    for holder in (harness.add_user(), harness.add_user()):
        host.lease_table(cfg).acquire(holder, pwd.getpwnam(holder).pw_uid, cfg.network.pool,
                                      cfg.network.block_prefix, lambda: [])
    user = harness.add_user()
    r = hook("prolog", job_env(node, user, 402, "0"), config)
    assert r.returncode == 0, r.stderr
    assert "no free" in grant_of(harness, user, 402).error
    answer = job_docker(harness, user, 402, "ps", check=False)
    assert answer.returncode != 0 and "berth: your Docker daemon could not be started" in answer.stderr
    print(answer.stderr.strip())
    assert hook("epilog", job_env(node, user, 402), config).returncode == 0
    assert not os.path.exists(paths.in_run_dir(f"{harness.root}/run", user).job_socket(402))


def _cgroup_dirs(user, prefix="job-"):
    from berth.daemon import cgroups
    return [os.path.join(top, n) for top in cgroups.user_dirs(user) if os.path.isdir(top)
            for n in os.listdir(top) if n.startswith(prefix)]


def test_a_login_adopted_into_a_job_starts_nothing_in_the_jobs_cgroups(harness, config):
    """As pam_slurm_adopt leaves it: the login's process in the job's
    cgroups (v1 freezer and pids, where proctrack/cgroup finds and kills a
    job's processes, and cgroup2), then berth's PAM hook, for a user who is down."""
    from berth.daemon import cgroups

    top = f"bt{harness.tag}slurm"
    job = [f"/sys/fs/cgroup/{h}/{top}/uid_1/job_99/step_extern" for h in ("freezer", "pids")
           if os.path.isdir(f"/sys/fs/cgroup/{h}")]
    if cgroups.v2_root():
        job.append(f"{cgroups.v2_root()}/{top}/job_99/step_extern")
    user = harness.add_user()
    try:
        for d in job:
            os.makedirs(d)
        adopt = "".join(f"echo $$ > {d}/cgroup.procs && " for d in job)
        login = subprocess.run(["/bin/sh", "-c", f"{adopt}exec {sys.executable} -I -m berth pam --run-dir "
                                                  f"{harness.root}/run --config {config}"],
                               env={"PATH": "/usr/bin:/bin", "PAM_TYPE": "open_session", "PAM_USER": user},
                               capture_output=True, text=True, timeout=120)
        assert login.returncode == 0, login.stderr
        deadline = time.monotonic() + 60
        while not harness.dockerd_pids(user) and time.monotonic() < deadline:
            time.sleep(0.1)
        (dockerd,) = harness.dockerd_pids(user)
        with open(f"/proc/{dockerd}/cgroup") as f:
            born_in = f.read()
        assert "job_99" not in born_in, born_in
        assert cgroups.slurm_job_of(born_in) is None
    finally:
        harness.berth("down", user, config=config, check=False)
        for d in job:  # deepest first; empty once what ran in it has exited
            deadline = time.monotonic() + 10
            while d.endswith(("step_extern", "job_99", "uid_1", top)):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                    continue
                d = os.path.dirname(d)
