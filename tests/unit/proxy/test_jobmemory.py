import logging

from berth.proxy import jobgrant, jobmemory

M = 1 << 20


def _job(tmp_path):
    """A v1 tree with berth's cgroup of job 42 and none of Slurm's yet."""
    target = tmp_path / "memory/berth/alice/job-42/memory.limit_in_bytes"
    target.parent.mkdir(parents=True)
    target.write_text("-1")
    patterns = (f"{tmp_path}/memory/slurm*/uid_1001/job_42/memory.limit_in_bytes",)
    return jobmemory.JobMemory(42, patterns, str(target)), target


def _slurm_makes_its_cgroup(tmp_path, limit):
    slurms = tmp_path / "memory/slurm_node1/uid_1001/job_42/memory.limit_in_bytes"
    slurms.parent.mkdir(parents=True, exist_ok=True)
    slurms.write_text(f"{limit}\n")
    return slurms


def test_before_slurms_cgroup_exists_nothing_is_written_and_it_is_said_once(tmp_path, caplog):
    memory, target = _job(tmp_path)
    with caplog.at_level(logging.INFO, logger="berth.proxy"):
        assert memory.ensure() == 0 and memory.ensure() == 0
    assert target.read_text() == "-1" and memory.copied == 0
    assert caplog.text.count("no memory limit in Slurm's cgroup of the job") == 1


def test_the_jobs_limit_is_copied_once_slurms_cgroup_holds_it_then_remembered(tmp_path):
    memory, target = _job(tmp_path)
    memory.ensure()
    slurms = _slurm_makes_its_cgroup(tmp_path, 100 * M)
    assert memory.ensure() == 100 * M
    assert target.read_text() == str(100 * M)
    slurms.write_text(f"{200 * M}\n")  # read no more: the socket remembers
    target.write_text("-1")
    assert memory.ensure() == 100 * M and target.read_text() == "-1"


def test_slurms_cgroup_without_a_limit_sets_none(tmp_path):
    memory, target = _job(tmp_path)
    _slurm_makes_its_cgroup(tmp_path, 9223372036854771712)  # v1's "none"
    assert memory.ensure() == 0 and target.read_text() == "-1"


def test_berths_cgroup_gone_leaves_things_as_they_are_with_a_log_line(tmp_path, caplog):
    memory, target = _job(tmp_path)
    _slurm_makes_its_cgroup(tmp_path, 100 * M)
    memory.target = str(tmp_path / "gone/memory.limit_in_bytes")
    with caplog.at_level(logging.WARNING, logger="berth.proxy"):
        assert memory.ensure() == 0
    assert "cannot be set" in caplog.text and memory.copied == 0


def test_an_unreadable_limit_is_none(tmp_path, caplog):
    (tmp_path / "memory.max").mkdir()  # open() fails: IsADirectoryError
    with caplog.at_level(logging.WARNING, logger="berth.proxy"):
        assert jobmemory.slurm_limit((str(tmp_path / "memory.max"),)) == 0
    assert "cannot be read" in caplog.text


def test_only_a_grant_without_memory_that_names_both_files_takes_it_later():
    files = {"slurm_memory": ("/cg/memory/slurm*/uid_1001/job_42/memory.limit_in_bytes",),
             "memory_file": "/cg/memory/berth/alice/job-42/memory.limit_in_bytes"}
    later = jobmemory.for_grant(jobgrant.Grant(42, "alice", 1001, (), **files))
    assert later.patterns == files["slurm_memory"] and later.target == files["memory_file"]
    assert jobmemory.for_grant(jobgrant.Grant(42, "alice", 1001, (), 100 * M, **files)) is None
    assert jobmemory.for_grant(jobgrant.Grant(42, "alice", 1001, ())) is None


def test_the_proxys_stats_give_each_jobs_memory_failed_jobs_too():
    from types import SimpleNamespace as NS

    from berth.proxy.service import ProxyService

    def served(key, job_memory=None):
        account = NS(raw=0, parsed=0)
        handler = NS(tasks=set(), requests=0, refused=0, job_memory=job_memory,
                     share=NS(account=account, over_cap=0, paced=0))
        return NS(key=key, handler=handler)

    service = ProxyService("/nonexistent")
    spec = NS(uid=1001)
    copied = jobmemory.JobMemory(42, (), "/x")
    copied.copied = 100 * M
    service.users["alice"] = served(spec)
    service.jobs[("alice", 42)] = served((spec, jobgrant.Grant(42, "alice", 1001, ())), copied)
    service.jobs[("alice", 43)] = served((spec, jobgrant.Grant(43, "alice", 1001, (), 8 * M)))
    service.jobs[("alice", 44)] = served(jobgrant.Grant(44, "alice", 1001, (), error="no daemon; ask"))
    jobs = service.stats()["alice"]["jobs"]
    assert {job: figures["memory"] for job, figures in jobs.items()} == {"42": 100 * M, "43": 8 * M, "44": 0}
    service.pool.close()
