import pytest

from berth.core import paths
from berth.proxy import jobgrant


def test_a_grant_reads_back_as_written():
    grant = jobgrant.Grant(42, "alice", 1001, ("GPU-1a2b", "GPU-3c4d"), 8 << 30, 2_000_000_000,
                             "/berth/alice/job-42")
    assert jobgrant.parse(jobgrant.render(grant)) == grant


def test_a_grant_with_device_files_or_an_error_reads_back():
    for grant in (jobgrant.Grant(42, "alice", 1001, ("0",), devices=("/dev/nvidia0",)),
                  jobgrant.Grant(43, "alice", 1001, (), error="no free address block in 10.213.0.0/16; ask "
                                                              "your administrator to enlarge [network].pool")):
        assert jobgrant.parse(jobgrant.render(grant)) == grant
    # one a berth without these fields wrote
    assert jobgrant.parse("job=1\nuser=a\nuid=1001\ngpus=0\n") == jobgrant.Grant(1, "a", 1001, ("0",))


def test_a_grant_names_where_the_jobs_memory_will_be_and_where_it_goes():
    grant = jobgrant.Grant(42, "alice", 1001, (), cgroup="/berth/alice/job-42",
                           slurm_memory=("/sys/fs/cgroup/*.slice/*slurmstepd.scope/job_42/memory.max",
                                         "/sys/fs/cgroup/*slurmstepd.scope/job_42/memory.max"),
                           memory_file="/sys/fs/cgroup/berth/alice/job-42/memory.max")
    assert jobgrant.parse(jobgrant.render(grant)) == grant


@pytest.mark.parametrize("path", ["relative/memory.max", "/a,b/memory.max", "/a b/memory.max"])
def test_a_cgroup_file_that_would_read_back_otherwise_is_refused(path):
    with pytest.raises(ValueError):
        jobgrant.render(jobgrant.Grant(1, "alice", 1001, (), memory_file=path))
    with pytest.raises(ValueError):
        jobgrant.render(jobgrant.Grant(1, "alice", 1001, (), slurm_memory=(path,)))


def test_a_grant_without_gpus_or_limits():
    grant = jobgrant.Grant(7, "bob", 1002, ())
    assert jobgrant.parse(jobgrant.render(grant)) == grant


@pytest.mark.parametrize("gpu", ["", "0,1", "GPU 1", "a\nb"])
def test_a_gpu_name_that_would_read_back_otherwise_is_refused(gpu):
    with pytest.raises(ValueError):
        jobgrant.render(jobgrant.Grant(1, "alice", 1001, (gpu,)))


@pytest.mark.parametrize("text", ["", "job=x\nuser=a\nuid=1\ngpus=\n", "garbage"])
def test_an_unreadable_grant_is_one_error(text):
    with pytest.raises(jobgrant.BadGrant):
        jobgrant.parse(text)


def test_job_paths_sit_in_the_users_run_dir():
    up = paths.in_run_dir("/run/berth", "alice")
    assert up.job_socket(42) == "/run/berth/alice/job-42.sock"
    assert up.job_grant("42") == "/run/berth/alice/job-42.grant"
    with pytest.raises(ValueError):
        up.job_socket("../x")
