"""berth on a real one-node Slurm (slurm_cluster.py): Debian's slurmctld,
slurmd and munge, private to this module, with two fake GPUs."""

import pytest
from slurm_cluster import SlurmCluster, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"slurm: {missing()}")


@pytest.fixture(scope="module")
def slurm(harness):
    cluster = SlurmCluster(parent=harness.root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def user(harness):
    return harness.add_user()


def test_a_job_runs_as_a_test_user_on_a_node_with_two_gpus(slurm, user):
    assert slurm.srun(user, "id", "-un").stdout.strip() == user
    assert slurm.node_info()["Gres"] == "gpu:2"
    gpus = slurm.srun(user, "--gres=gpu:1", "sh", "-c", "echo $SLURM_STEP_GPUS").stdout.strip()
    assert gpus in ("0", "1")
    assert slurm.node_state() == "IDLE"
