import pytest

from berth.slurm import jobenv

# What slurmd 22.05 hands its Prolog (prep_script_slurmd.c, _build_env), GPUs from the gres plugin.
PROLOG_ENV = {"SLURMD_NODENAME": "node1", "SLURM_CONF": "/tmp/slurm-x/slurm.conf", "SLURM_CLUSTER_NAME": "c",
              "SLURM_JOB_ID": "42", "SLURM_JOB_UID": "1001", "SLURM_JOB_GID": "1001", "SLURM_JOB_USER": "alice",
              "SLURM_JOBID": "42", "SLURM_UID": "1001", "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
              "SLURM_JOB_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "0,1", "SPANK_FOO": "bar"}


def test_the_prolog_environment_gives_the_job():
    assert jobenv.read(PROLOG_ENV) == jobenv.Job(42, "alice", 1001, (0, 1), "/tmp/slurm-x/slurm.conf", "node1")


def test_a_job_without_gpus_and_slurm_conf_takes_the_defaults():
    env = {k: v for k, v in PROLOG_ENV.items() if k not in ("SLURM_JOB_GPUS", "SLURM_CONF", "SLURMD_NODENAME")}
    job = jobenv.read(env)
    assert (job.gpus, job.slurm_conf, job.node) == ((), "/etc/slurm/slurm.conf", "")


@pytest.mark.parametrize("key, value, says", [
    ("SLURM_JOB_ID", "", "SLURM_JOB_ID is not set"),
    ("SLURM_JOB_ID", "42_1", "not a number"),
    ("SLURM_JOB_UID", "-1", "not a number"),
    ("SLURM_JOB_USER", "../root", "not a user name"),
    ("SLURM_JOB_GPUS", "0,gpu1", "not a list of GPU indices"),
])
def test_what_slurmd_would_never_send_is_refused(key, value, says):
    with pytest.raises(jobenv.BadJobEnvironment, match=says):
        jobenv.read({**PROLOG_ENV, key: value})


@pytest.mark.parametrize("per_node, nodelist, node, cpus", [
    ("2", "node1", "node1", 2),
    ("4(x2),2", "gpu[1-3]", "gpu2", 4),
    ("4(x2),2", "gpu[1-3]", "gpu3", 2),
    ("4(x2),2", "gpu[1-3]", "other", 0),
    ("2", "", "", 2),
    ("", "node1", "node1", 0),
    ("two", "node1", "node1", 0),
])
def test_the_cpus_of_this_node_from_the_compressed_list(per_node, nodelist, node, cpus):
    assert jobenv.cpus_on_node(per_node, nodelist, node) == cpus


def test_the_prolog_environment_gives_this_nodes_cpus():
    env = {**PROLOG_ENV, "SLURM_JOB_CPUS_PER_NODE": "1(x2)", "SLURM_NODELIST": "node[0-1]"}
    assert jobenv.read(env).cpus == 1
