"""GPUs held to a Slurm job's grant on its socket, and held back on a Slurm
node's login socket: each way to a GPU, granted and not."""

import pytest

from berth.proxy import apijson, jobgrant, jobpolicy, policy

JOB = jobpolicy.for_grant(jobgrant.Grant(42, "alice", 1001, ("GPU-aaa", "GPU-bbb"), cgroup="/berth/alice/job-42",
                                         devices=("/dev/nvidia2", "/dev/nvidia3")))
INDICES = jobpolicy.Hold(7, ("1",), (), "")
NONE = jobpolicy.Hold(8, (), (), "")
LOGIN = jobpolicy.LOGIN
GPU = {"Driver": "", "Capabilities": [["gpu"]]}


def body(host=None, **top):
    return apijson.loads(apijson.dumps({"Image": "cuda", **top, **({"HostConfig": host} if host is not None else {})}))


def gpus(count=0, ids=None, **request):
    return {"DeviceRequests": [{**GPU, "Count": count, "DeviceIDs": ids, **request}]}


def held(hold, host=None, **top):
    out, refusal = jobpolicy.create(body(host, **top), hold)
    assert refusal is None, refusal
    # what dockerd gets reads back as dockerd reads it (one key per field, in any case)
    return apijson.loads(apijson.dumps(out))


# (hold, HostConfig) -> the DeviceRequests dockerd gets
REWRITES = [
    (JOB, gpus(-1), [{**GPU, "Count": 0, "DeviceIDs": ["GPU-aaa", "GPU-bbb"]}]),        # --gpus all
    (JOB, gpus(1), [{**GPU, "Count": 0, "DeviceIDs": ["GPU-aaa"]}]),                    # --gpus 1
    (JOB, gpus(2, Driver="nvidia"), [{**GPU, "Driver": "nvidia", "Count": 0, "DeviceIDs": ["GPU-aaa", "GPU-bbb"]}]),
    (JOB, gpus(ids=["GPU-bbb"]), [{**GPU, "Count": 0, "DeviceIDs": ["GPU-bbb"]}]),      # --gpus device=GPU-bbb
    (INDICES, gpus(-1, Capabilities=[["compute", "utility"]]),
     [{**GPU, "Capabilities": [["compute", "utility"]], "Count": 0, "DeviceIDs": ["1"]}]),
    (JOB, gpus(0), [{**GPU, "Count": 0, "DeviceIDs": None}]),                           # no device asked
    (LOGIN, gpus(0), [{**GPU, "Count": 0, "DeviceIDs": None}]),
    (JOB, {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]},
     [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-aaa", "nvidia.com/gpu=GPU-bbb"]}]),
    (JOB, {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-bbb", "vendor.com/fpga=0"]}]},
     [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-bbb", "vendor.com/fpga=0"]}]),
    (LOGIN, {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["vendor.com/fpga=0"]}]},
     [{"Driver": "cdi", "DeviceIDs": ["vendor.com/fpga=0"]}]),
]


@pytest.mark.parametrize("hold, host, expected", REWRITES)
def test_device_requests_become_the_grant(hold, host, expected):
    assert held(hold, host).field("HostConfig").field("DeviceRequests") == expected


# (hold, HostConfig, words of the refusal)
REFUSALS = [
    (JOB, gpus(3), "3 GPUs in job 42, which was granted 2 (GPU-aaa, GPU-bbb)"),
    (JOB, gpus(ids=["GPU-ccc"]), "GPU 'GPU-ccc', not granted to job 42 (it has GPU-aaa, GPU-bbb)"),
    (JOB, gpus(ids=["0"]), "GPU '0', not granted to job 42 (it has GPU-aaa, GPU-bbb)"),   # an index, not its name
    (JOB, gpus(-1, ids=["GPU-aaa", "GPU-ccc"]), "GPU 'GPU-ccc'"),
    (JOB, gpus(1, Driver="nvidia.cdi", ids=["GPU-ccc"]), "GPU 'GPU-ccc'"),
    (JOB, gpus(ids=["GPU-ccc"], Driver="amd", Capabilities=None), "GPU 'GPU-ccc'"),     # any driver but CDI
    (INDICES, gpus(ids=["0"]), "GPU '0', not granted to job 7 (it has 1)"),
    (NONE, gpus(-1), "job 8, which was granted no GPU"),
    (NONE, gpus(1), "job 8, which was granted no GPU"),
    (LOGIN, gpus(-1), "GPUs (--gpus) outside a Slurm job"),
    (LOGIN, gpus(ids=["0"]), "outside a Slurm job"),
    (JOB, {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-ccc"]}]}, "not granted to job 42"),
    (JOB, {"DeviceRequests": [{"Driver": "CDI", "DeviceIDs": ["NVIDIA.com/gpu=0"]}]}, "not granted to job 42"),
    (NONE, {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]}, "granted no GPU"),
    (LOGIN, {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]}, "outside a Slurm job"),
    (JOB, {"Devices": [{"PathOnHost": "/dev/nvidia0"}]}, "the device /dev/nvidia0, not granted to job 42"),
    (INDICES, {"Devices": [{"PathOnHost": "/dev/nvidia1"}]}, "berth cannot tell it is one of the job's"),
    (JOB, {"Devices": [{"PathOnHost": "/dev/nvidia-caps/nvidia-cap1"}]}, "berth cannot tell whose GPU"),
    (JOB, {"Devices": [{"PathOnHost": "/dev/dri/renderD128"}]}, "berth cannot tell whose GPU"),
    # a directory: dockerd adds every device below it (moby oci.DevicesFromPath), MIG's and IMEX's
    (JOB, {"Devices": [{"PathOnHost": "/dev/nvidia-caps"}]}, "berth cannot tell whose GPU"),
    (JOB, {"Devices": [{"PathOnHost": "/dev/nvidia-caps-imex-channels"}]}, "berth cannot tell whose GPU"),
    (LOGIN, {"Devices": [{"PathOnHost": "/dev/nvidiactl"}]}, "the GPU device /dev/nvidiactl outside a Slurm job"),
    (LOGIN, {"Devices": [{"PathOnHost": "/dev/nvidia0"}]}, "outside a Slurm job"),
    (JOB, {"Annotations": {"cdi.k8s.io/x": "nvidia.com/gpu=all"}}, "CDI annotation"),
    (LOGIN, {"Annotations": {"cdi.k8s.io/x": "nvidia.com/gpu=0"}}, "CDI annotation"),
    (JOB, gpus("1"), "device request berth cannot read"),
    (JOB, gpus(True), "device request berth cannot read"),
    (JOB, gpus(ids="GPU-aaa"), "device request berth cannot read"),
    (JOB, {"DeviceRequests": {"Driver": "nvidia"}}, "DeviceRequests berth cannot read"),
]


@pytest.mark.parametrize("hold, host, words", REFUSALS)
def test_a_way_outside_the_grant_is_refused(hold, host, words):
    out, refusal = jobpolicy.create(body(host), hold)
    assert out is None and refusal is not None and words in refusal.what, refusal


def test_the_login_refusal_says_to_run_under_slurm():
    _, refusal = jobpolicy.create(body(gpus(-1)), LOGIN)
    assert "srun --gpus=1 docker run --gpus all" in refusal.instead


@pytest.mark.parametrize("devices", [[{"PathOnHost": "/dev/nvidia2"}, {"PathOnHost": "/dev/nvidia3"}],
                                     [{"PathOnHost": "/dev/nvidiactl"}, {"PathOnHost": "/dev/nvidia-uvm"}]])
def test_granted_device_files_and_the_shared_ones_pass_on_a_jobs_socket(devices):
    assert held(JOB, {"Devices": devices}).field("HostConfig").field("Devices") == devices


@pytest.mark.parametrize("hold, env, expected", [
    (JOB, None, ["NVIDIA_VISIBLE_DEVICES=GPU-aaa,GPU-bbb"]),
    (JOB, ["A=1", "NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES", "B=2"],
     ["A=1", "B=2", "NVIDIA_VISIBLE_DEVICES=GPU-aaa,GPU-bbb"]),
    (NONE, ["NVIDIA_VISIBLE_DEVICES=0"], ["NVIDIA_VISIBLE_DEVICES=void"]),
    (LOGIN, ["nvidia_visible_devices=x"], ["nvidia_visible_devices=x", "NVIDIA_VISIBLE_DEVICES=void"]),
])
def test_every_container_gets_the_grant_in_the_runtimes_variable(hold, env, expected):
    assert held(hold, Env=env).field("Env") == expected


def test_a_jobs_container_carries_its_label_whatever_the_client_said():
    out = held(JOB, {}, Labels={"berth.job": "41", "app": "x"})
    assert out.field("Labels") == {"app": "x", "berth.job": "42"}
    assert held(JOB).field("Labels") == {"berth.job": "42"}
    assert held(LOGIN).field("Labels") is None  # the login socket's containers are no job's


def test_a_label_given_in_another_case_of_the_key_is_replaced():
    out = held(JOB, labels={"berth.job": "41"})
    assert [k for k in out if k.casefold() == "labels"] == ["Labels"] and out["Labels"] == {"berth.job": "42"}


def test_the_grants_cgroup_is_the_parent_where_it_names_one():
    assert held(JOB).field("HostConfig").field("CgroupParent") == "/berth/alice/job-42"
    assert held(JOB, {"cgroupparent": ""}).field("HostConfig") == {"CgroupParent": "/berth/alice/job-42"}
    assert held(INDICES).field("HostConfig") is None
    assert held(LOGIN, {"Memory": 1}).field("HostConfig") == {"Memory": 1}


def test_the_rest_of_the_body_is_as_the_client_sent_it():
    host = {"Memory": 1 << 30, "Binds": ["/home/a:/a"], "NetworkMode": "container:net"}
    out = held(JOB, host, Cmd=["nvidia-smi"], Tty=True)
    assert out.field("Cmd") == ["nvidia-smi"] and out.field("Tty") is True and out.field("Image") == "cuda"
    assert {k: v for k, v in out.field("HostConfig").items() if k != "CgroupParent"} == host


def test_a_users_own_cgroup_parent_is_still_refused_before_the_grant_sets_one():
    refusal = policy.check("POST", "/containers/create", body({"CgroupParent": "/"}), policy.Context("10.0.0.0/25"))
    assert refusal is not None and "--cgroup-parent" in refusal.what


@pytest.mark.parametrize("hold, update, words", [
    (JOB, {"Memory": 1 << 30, "CpuShares": 512}, None),
    (JOB, gpus(ids=["GPU-aaa"]), None),
    (JOB, gpus(ids=["GPU-ccc"]), "not granted to job 42"),
    (JOB, {"Devices": [{"PathOnHost": "/dev/nvidia0"}]}, "not granted to job 42"),
    (LOGIN, gpus(-1), "outside a Slurm job"),
    (LOGIN, {"Devices": [{"PathOnHost": "/dev/nvidia0"}]}, "outside a Slurm job"),
])
def test_an_update_is_held_to_the_grant(hold, update, words):
    refusal = jobpolicy.update_refusal(apijson.loads(apijson.dumps(update)), hold)
    assert (refusal is None) if words is None else (words in refusal.what)


@pytest.mark.parametrize("runtime, refused", [("runc", False), ("io.containerd.runc.v2", False), ("nvidia", True),
                                              (None, True)])
def test_a_build_is_refused_where_its_steps_would_run_with_the_nvidia_runtime(runtime, refused):
    refusal = jobpolicy.build_refusal(runtime)
    assert (refusal is not None) == refused
    assert refusal is None or "default runtime" in refusal.instead


@pytest.mark.parametrize("hold, labels, refused", [
    (JOB, {"berth.job": "42"}, None), (JOB, None, None), (JOB, {"app": "x"}, None),
    (JOB, {"berth.job": "41"}, "starting a container of Slurm job 41 in job 42"),
    (LOGIN, {"berth.job": "41"}, "starting a container of Slurm job 41 outside it"),
    (LOGIN, {"app": "x"}, None),
])
def test_a_container_of_another_job_starts_through_that_jobs_socket_alone(hold, labels, refused):
    refusal = jobpolicy.start_refusal(labels, hold)
    assert (refusal is None) if refused is None else refused in refusal.what
