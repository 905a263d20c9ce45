"""A Slurm job's socket on the proxy, before a real hardened dockerd, without
Slurm: a grant written by hand as the Prolog writes it (root's, 0600), the
socket served through the control socket, and both docker CLIs through it.
No GPU exists here: dockerd takes a create with DeviceRequests (it fails
only at start), so `docker inspect` shows what berth sent it.

The attacker is the job's user, with a shell and both sockets (their own
and the job's): the probes try another job's GPU and a way out of the
label, and every one must fail."""

import json
import os
import pwd
import socket
import stat
import subprocess

import pytest
from conftest import DEBIAN_CLI

from berth.core import paths
from berth.core.fsutil import atomic_write
from berth.proxy import control as proxyctl
from berth.proxy import jobgrant

JOB, OTHER, FAILED = 42, 43, 44
GRANTED = ("GPU-aaa", "GPU-bbb")
THEIRS = "GPU-ccc"  # the other job's
CGROUP = "/berth-test/job-42"
ERROR = "no free address block for you in 10.213.0.0/16; ask your administrator to enlarge [network].pool"


@pytest.fixture(scope="module")
def slurm_node(harness):
    """(user, image, run dir): a user up on a node whose config says [slurm] enabled."""
    config = harness.write_config("slurm.toml", extra="[slurm]\nenabled = true\n")
    user = harness.add_user()
    harness.berth("up", user, config=config)
    img = harness.import_busybox(user)
    yield user, img, f"{harness.root}/run"
    harness.berth("down", user, config=config)


def grant(run_dir, user, job_id, gpus=(), **fields):
    """Written as the Prolog writes it: root's, 0600, by an atomic write."""
    upaths = paths.in_run_dir(run_dir, user)
    atomic_write(upaths.job_grant(job_id), jobgrant.render(jobgrant.Grant(
        job_id, user, pwd.getpwnam(user).pw_uid, tuple(gpus), **fields)), mode=0o600)
    return upaths


@pytest.fixture(scope="module")
def job(slurm_node):
    """(user, image, the job's socket): job 42 granted two GPUs and a cgroup, and
    job 43 of the same user granted another, both served."""
    user, img, run_dir = slurm_node
    upaths = grant(run_dir, user, JOB, GRANTED, cgroup=CGROUP)
    grant(run_dir, user, OTHER, (THEIRS,))
    proxyctl.serve_job(run_dir, user, JOB)
    proxyctl.serve_job(run_dir, user, OTHER)
    yield user, img, upaths.job_socket(JOB)
    for job_id in (JOB, OTHER):
        proxyctl.drop_job(run_dir, user, job_id)
        os.unlink(upaths.job_grant(job_id))


def docker(sock, *args, cli, user, check=True):
    """`cli` on `sock`, as `user` (their socket is theirs alone)."""
    r = subprocess.run(["runuser", "-u", user, "--", cli, "-H", f"unix://{sock}", *args], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, HOME=pwd.getpwnam(user).pw_dir))
    if check:
        assert r.returncode == 0, r.stderr
    return r


def created(sock, *args, cli, user):
    """The inspect of a container created with `args` (removed again)."""
    cid = docker(sock, "create", *args, cli=cli, user=user).stdout.strip()
    try:
        return json.loads(docker(sock, "inspect", cid, cli=cli, user=user).stdout)[0]
    finally:
        docker(sock, "rm", "-f", cid, cli=cli, user=user)


def refused(sock, *args, cli, user):
    r = docker(sock, "create", *args, cli=cli, user=user, check=False)
    assert r.returncode != 0 and "Error response from daemon: berth:" in r.stderr, r.stderr
    return r.stderr


def gpu_requests(info):
    return [(r["Driver"], r["Count"], r["DeviceIDs"], r["Capabilities"]) for r in info["HostConfig"]["DeviceRequests"]]


def env(info, name):
    return [e.partition("=")[2] for e in info["Config"]["Env"] if e.partition("=")[0] == name]


def test_the_jobs_socket_is_the_users_alone(job, harness):
    user, _, sock = job
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam(user).pw_uid, 0)
    stranger = harness.add_user()
    r = docker(sock, "ps", cli=DEBIAN_CLI, user=stranger, check=False)
    assert r.returncode != 0 and "permission denied" in r.stderr, r.stderr


def test_dockerd_takes_a_gpu_request_it_cannot_start(job):
    """What the rest stands on: a create with DeviceRequests succeeds on a
    dockerd without any GPU, and only the start fails."""
    user, img, sock = job
    cid = docker(sock, "create", "--gpus", "all", img, "true", cli=DEBIAN_CLI, user=user).stdout.strip()
    try:
        r = docker(sock, "start", cid, cli=DEBIAN_CLI, user=user, check=False)
        assert r.returncode != 0 and "could not select device driver" in r.stderr, r.stderr
    finally:
        docker(sock, "rm", "-f", cid, cli=DEBIAN_CLI, user=user)


@pytest.mark.parametrize("gpus, ids", [("all", list(GRANTED)), ("1", ["GPU-aaa"]), ("2", list(GRANTED)),
                                       ("device=GPU-bbb", ["GPU-bbb"])])
def test_gpus_asked_become_the_granted_ones(job, docker_cli, gpus, ids):
    user, img, sock = job
    info = created(sock, "--gpus", gpus, img, "true", cli=docker_cli, user=user)
    assert gpu_requests(info) == [("", 0, ids, [["gpu"]])]
    assert info["Config"]["Labels"]["berth.job"] == str(JOB)
    assert env(info, "NVIDIA_VISIBLE_DEVICES") == [",".join(GRANTED)]
    assert info["HostConfig"]["CgroupParent"] == CGROUP


def test_every_container_of_the_job_carries_its_label_and_grant(job, docker_cli):
    """Without --gpus too: the nvidia runtime reads the variable from the
    image (nvidia/cuda says all), and the Epilog finds containers by the label."""
    user, img, sock = job
    info = created(sock, "--label", f"berth.job={OTHER}", "-e", f"NVIDIA_VISIBLE_DEVICES={THEIRS}", img, "true",
                   cli=docker_cli, user=user)
    assert info["Config"]["Labels"]["berth.job"] == str(JOB)
    assert env(info, "NVIDIA_VISIBLE_DEVICES") == [",".join(GRANTED)]
    assert info["HostConfig"]["DeviceRequests"] is None


@pytest.mark.parametrize("args, words", [
    (["--gpus", f"device={THEIRS}"], f"GPU '{THEIRS}', not granted to job {JOB} (it has GPU-aaa, GPU-bbb)"),
    (["--gpus", "3"], f"3 GPUs in job {JOB}, which was granted 2 (GPU-aaa, GPU-bbb)"),
    (["--gpus", "device=0"], f"GPU '0', not granted to job {JOB}"),
    (["--device", "/dev/nvidia1"], f"the device /dev/nvidia1 in job {JOB} (berth cannot tell it is one of"),
    (["--device", "/dev/dri/renderD128"], "berth cannot tell whose GPU it is"),
    (["--cgroup-parent", "/"], "--cgroup-parent"),
])
def test_a_gpu_outside_the_grant_is_refused_naming_the_granted_ones(job, docker_cli, args, words):
    user, img, sock = job
    assert words in refused(sock, *args, img, "true", cli=docker_cli, user=user)


def test_the_other_job_gets_its_own_gpu_and_label(job, slurm_node, docker_cli):
    user, img, run_dir = slurm_node
    other = paths.in_run_dir(run_dir, user).job_socket(OTHER)
    info = created(other, "--gpus", "all", img, "true", cli=docker_cli, user=user)
    assert gpu_requests(info) == [("", 0, [THEIRS], [["gpu"]])]
    assert info["Config"]["Labels"]["berth.job"] == str(OTHER) and info["HostConfig"]["CgroupParent"] == ""
    stderr = refused(other, "--gpus", "device=GPU-aaa", img, "true", cli=docker_cli, user=user)
    assert f"GPU 'GPU-aaa', not granted to job {OTHER} (it has {THEIRS})" in stderr, stderr


def raw(sock, user, method, target, body):
    """One request as the user's own process would send it (curl, a script):
    the bytes the attacker chooses."""
    script = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
              "s.sendall(sys.stdin.buffer.read())\nout=b''\n"
              "while (d:=s.recv(65536)): out+=d\nsys.stdout.buffer.write(out)\n")
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = (f"{method} {target} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nConnection: close\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    r = subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-I", "-c", script, sock], input=request,
                       capture_output=True, timeout=30)
    head, _, answer = r.stdout.partition(b"\r\n\r\n")
    return int(head.split()[1]), answer.decode(errors="replace")


@pytest.mark.parametrize("body, words", [
    # another job's GPU by every way the API has
    ({"Image": "IMG", "HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": [THEIRS],
                                                         "Capabilities": [["gpu"]]}]}}, "not granted"),
    ({"Image": "IMG", "HostConfig": {"DeviceRequests": [{"Driver": "nvidia.cdi", "DeviceIDs": [THEIRS]}]}},
     "not granted"),
    ({"Image": "IMG", "HostConfig": {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": [f"nvidia.com/gpu={THEIRS}"]}]}},
     "not granted"),
    ({"Image": "IMG", "HostConfig": {"devicerequests": [{"driver": "", "deviceids": [THEIRS],
                                                         "capabilities": [["compute"]]}]}}, "not granted"),
    ({"Image": "IMG", "HostConfig": {"Annotations": {"cdi.k8s.io/x": f"nvidia.com/gpu={THEIRS}"}}}, "CDI annotation"),
    # a second spelling of the field dockerd would read last
    ('{"Image": "IMG", "HostConfig": {"DeviceRequests": [], "devicerequests": [{"Count": -1}]}}', "appears twice"),
    # HostConfig's fields at the top, which dockerd 20.10 still reads there
    ({"Image": "IMG", "DeviceRequests": [{"Count": -1}]}, "outside HostConfig"),
    # a cgroup of the user's choosing, out of the job's
    ({"Image": "IMG", "HostConfig": {"CgroupParent": "/"}}, "--cgroup-parent"),
    ({"Image": "IMG", "HostConfig": {"Devices": [{"PathOnHost": "/dev/char/195:2", "PathInContainer": "/dev/x",
                                                  "CgroupPermissions": "rwm"}]}}, "devices other than GPUs"),
])
def test_probes_for_another_jobs_gpu_are_refused(job, body, words):
    user, img, sock = job
    text = (body if isinstance(body, str) else json.dumps(body)).replace("IMG", img)
    status, answer = raw(sock, user, "POST", "/v1.41/containers/create", text)
    assert status == 403 and words in json.loads(answer)["message"], answer


def test_an_update_cannot_reach_another_jobs_gpu(job):
    """dockerd's update changes no device (moby UpdateContainer); a device field in one is held all the same."""
    user, img, sock = job
    cid = docker(sock, "create", img, "true", cli=DEBIAN_CLI, user=user).stdout.strip()
    try:
        for body in ({"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": [THEIRS]}]},
                     {"Devices": [{"PathOnHost": "/dev/nvidia2", "PathInContainer": "/dev/nvidia2"}]}):
            status, answer = raw(sock, user, "POST", f"/v1.41/containers/{cid}/update", body)
            assert status == 403 and f"job {JOB}" in answer, answer
        assert docker(sock, "update", "--memory", "64m", "--memory-swap", "128m", cid, cli=DEBIAN_CLI,
                      user=user).returncode == 0
        info = json.loads(docker(sock, "inspect", cid, cli=DEBIAN_CLI, user=user).stdout)[0]
        assert info["HostConfig"]["Memory"] == 64 << 20 and info["HostConfig"]["DeviceRequests"] is None
    finally:
        docker(sock, "rm", "-f", cid, cli=DEBIAN_CLI, user=user)


def test_the_login_socket_of_a_slurm_node_gives_no_gpu(slurm_node, harness, docker_cli):
    user, img, _ = slurm_node
    login = harness.sock(user)
    for args in (["--gpus", "all"], ["--gpus", "device=0"], ["--device", "/dev/nvidia0"]):
        stderr = refused(login, *args, img, "true", cli=docker_cli, user=user)
        assert "outside a Slurm job" in stderr and "srun --gpus=1 docker run --gpus all" in stderr, stderr
    info = created(login, "-e", "NVIDIA_VISIBLE_DEVICES=all", img, "true", cli=docker_cli, user=user)
    assert env(info, "NVIDIA_VISIBLE_DEVICES") == ["void"] and "berth.job" not in (info["Config"]["Labels"] or {})


@pytest.mark.parametrize("forged, words", [("owned by the user", "berth only trusts its own files"),
                                           ("of another user", "job 45 of 'root'")])
def test_a_grant_not_roots_for_this_user_is_not_served(slurm_node, forged, words):
    user, _, run_dir = slurm_node
    upaths = paths.in_run_dir(run_dir, user)
    owner = ("root", 0) if forged == "of another user" else (user, pwd.getpwnam(user).pw_uid)
    atomic_write(upaths.job_grant(45), jobgrant.render(jobgrant.Grant(45, *owner, ("GPU-zzz",))), mode=0o600)
    try:
        if forged == "owned by the user":
            os.chown(upaths.job_grant(45), owner[1], -1)
        with pytest.raises(proxyctl.ProxyError) as refusal:
            proxyctl.serve_job(run_dir, user, 45)
        assert words in str(refusal.value)
        assert not os.path.exists(upaths.job_socket(45))
    finally:
        os.unlink(upaths.job_grant(45))


def test_a_job_without_a_daemon_gets_its_reason(slurm_node, docker_cli):
    user, _, run_dir = slurm_node
    upaths = grant(run_dir, user, FAILED, error=ERROR)
    try:
        proxyctl.serve_job(run_dir, user, FAILED)
        r = docker(upaths.job_socket(FAILED), "ps", cli=docker_cli, user=user, check=False)
        assert r.returncode != 0 and f"Error response from daemon: berth: {ERROR}" in r.stderr, r.stderr
    finally:
        proxyctl.drop_job(run_dir, user, FAILED)
        os.unlink(upaths.job_grant(FAILED))
    assert not os.path.exists(upaths.job_socket(FAILED))


def test_drop_job_removes_the_socket_and_ping_and_stats_count_jobs(slurm_node):
    user, img, run_dir = slurm_node
    upaths = grant(run_dir, user, 47, ("GPU-aaa",))
    try:
        proxyctl.serve_job(run_dir, user, 47)
        assert proxyctl.ping(run_dir)["jobs"] >= 1 and "47" in proxyctl.stats(run_dir)[user]["jobs"]
        proxyctl.drop_job(run_dir, user, 47)
        assert not os.path.exists(upaths.job_socket(47))
        assert "47" not in proxyctl.stats(run_dir)[user]["jobs"]
        with socket.socket(socket.AF_UNIX) as s, pytest.raises(FileNotFoundError):
            s.connect(upaths.job_socket(47))
        proxyctl.drop_job(run_dir, user, 47)  # already gone: fine
    finally:
        os.unlink(upaths.job_grant(47))


def test_a_restarted_proxy_serves_every_grant_in_place(slurm_node, harness):
    """After a crash or a restart (and on SIGHUP), from the grants alone."""
    user, img, run_dir = slurm_node
    upaths = grant(run_dir, user, 48, ("GPU-aaa",))
    from berth.lifecycle import hostobjects as host
    supervisor = host.proxy_supervisor(harness.cfg())
    try:
        supervisor.stop()
        supervisor.ensure()
        assert os.path.exists(upaths.job_socket(48))
        info = created(upaths.job_socket(48), "--gpus", "all", img, "true", cli=DEBIAN_CLI, user=user)
        assert gpu_requests(info) == [("", 0, ["GPU-aaa"], [["gpu"]])]
    finally:
        proxyctl.drop_job(run_dir, user, 48)
        os.unlink(upaths.job_grant(48))


def test_a_user_served_again_gets_their_jobs_sockets_back(slurm_node, harness):
    """The reaper took the user down mid-job (their dockerd died); the next
    up serves the job's socket with the login socket."""
    user, img, run_dir = slurm_node
    config = f"{harness.root}/slurm.toml"
    upaths = grant(run_dir, user, 49, ("GPU-aaa",))
    try:
        proxyctl.serve_job(run_dir, user, 49)
        harness.berth("down", user, config=config)
        assert not os.path.exists(upaths.job_socket(49))
        harness.berth("up", user, config=config)
        info = created(upaths.job_socket(49), "--gpus", "all", img, "true", cli=DEBIAN_CLI, user=user)
        assert gpu_requests(info) == [("", 0, ["GPU-aaa"], [["gpu"]])]
    finally:
        proxyctl.drop_job(run_dir, user, 49)
        os.unlink(upaths.job_grant(49))


def test_a_build_on_the_jobs_socket_works_where_runc_is_the_default(job, harness):
    """Its RUN steps get no GPU from the runtime: refused only where the
    site made another runtime the default (tests/unit/proxy: test_jobsocket)."""
    user, img, sock = job
    context = os.path.join(harness.root, "job-build")  # the user reads it: /tmp/pytest-of-root is root's
    os.makedirs(context, mode=0o755)
    with open(os.path.join(context, "Dockerfile"), "w") as f:
        f.write(f"FROM {img}\nRUN true\n")
    r = subprocess.run(["runuser", "-u", user, "--", DEBIAN_CLI, "-H", f"unix://{sock}", "build", "-q", "-t",
                        "bt-jobbuild", context], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=pwd.getpwnam(user).pw_dir, DOCKER_BUILDKIT="0"))
    assert r.returncode == 0, r.stderr
    docker(sock, "rmi", "bt-jobbuild", cli=DEBIAN_CLI, user=user)


@pytest.fixture(scope="module")
def nvidia_default_node(harness):
    """(user, image, run dir) on a node whose site made `nvidia` the default
    runtime, as berth.toml shows how (here runc under that name: no GPU)."""
    config = harness.write_config("slurm-nvidia.toml", extra=(
        '[slurm]\nenabled = true\n[daemon_json]\ndefault-runtime = "nvidia"\n'
        '[daemon_json.runtimes.nvidia]\npath = "runc"\n'))
    user = harness.add_user()
    harness.berth("up", user, config=config)
    img = harness.import_busybox(user)
    yield user, img, f"{harness.root}/run"
    harness.berth("down", user, config=config)


def test_where_nvidia_is_the_default_runtime_builds_are_refused_and_containers_held(nvidia_default_node, harness):
    """Build steps would run with the image's NVIDIA_VISIBLE_DEVICES (every
    GPU), where berth cannot set it; containers get the variable set."""
    user, img, run_dir = nvidia_default_node
    upaths = grant(run_dir, user, 49, ("GPU-aaa",))
    try:
        proxyctl.serve_job(run_dir, user, 49)
        for sock in (harness.sock(user), upaths.job_socket(49)):
            status, answer = raw(sock, user, "POST", "/v1.41/build?t=x", "")
            assert status == 403 and "with the nvidia runtime" in answer, answer
        info = created(upaths.job_socket(49), "-e", "NVIDIA_VISIBLE_DEVICES=all", img, "true", cli=DEBIAN_CLI,
                       user=user)
        assert env(info, "NVIDIA_VISIBLE_DEVICES") == ["GPU-aaa"]
        r = docker(upaths.job_socket(49), "run", "--rm", img, "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES",
                   cli=DEBIAN_CLI, user=user)
        assert r.stdout.strip() == "GPU-aaa"
    finally:
        proxyctl.drop_job(run_dir, user, 49)
        os.unlink(upaths.job_grant(49))


def test_cdi_names_are_held_to_the_grant(job, docker_cli):
    """docker 28 sends `--device vendor/class=name` as a CDI request
    (docker 20.10 takes no such name: "not an absolute path")."""
    if docker_cli == DEBIAN_CLI:
        pytest.skip("docker 20.10 sends no CDI request")
    user, img, sock = job
    stderr = refused(sock, "--device", f"nvidia.com/gpu={THEIRS}", img, "true", cli=docker_cli, user=user)
    assert f"the GPU 'nvidia.com/gpu={THEIRS}', not granted to job {JOB} (it has GPU-aaa, GPU-bbb)" in stderr
    info = created(sock, "--device", "nvidia.com/gpu=all", img, "true", cli=docker_cli, user=user)
    assert gpu_requests(info) == [("cdi", 0, [f"nvidia.com/gpu={g}" for g in GRANTED], None)]


def test_a_container_of_another_job_starts_through_its_own_jobs_socket_alone(job, slurm_node, harness, docker_cli):
    """A container keeps the devices it was made with: one an Epilog
    missed, its job ended and its GPUs another's now, must not start
    through the next job's socket or the login socket."""
    user, img, run_dir = slurm_node
    other = paths.in_run_dir(run_dir, user).job_socket(OTHER)
    cid = docker(other, "create", img, "true", cli=docker_cli, user=user).stdout.strip()
    try:
        for sock, where in ((job[2], f"in job {JOB}"), (harness.sock(user), "outside it")):
            for verb in ("start", "restart"):
                r = docker(sock, verb, cid, cli=docker_cli, user=user, check=False)
                assert r.returncode != 0 and f"berth: starting a container of Slurm job {OTHER} {where}" in r.stderr, \
                    r.stderr
        docker(other, "start", "-a", cid, cli=docker_cli, user=user)
        assert json.loads(docker(other, "inspect", cid, cli=docker_cli, user=user).stdout)[0]["State"]["ExitCode"] == 0
    finally:
        docker(other, "rm", "-f", cid, cli=docker_cli, user=user)
