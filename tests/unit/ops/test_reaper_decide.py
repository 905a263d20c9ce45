from berth.ops.reaper import Decision, Observed, decide

NOW = 100_000.0


def obs(**kw):
    base = dict(user="alice", state="up", sessions=0, processes=0, containers=(), last_active=NOW - 10)
    base.update(kw)
    return Observed(**base)


def test_idle_past_the_limit_is_reaped():
    d = decide(obs(last_active=NOW - 7200), 3600, NOW)
    assert d.action == "reap" and "idle for 2h00m" in d.reason and "limit 1h00m" in d.reason


def test_idle_under_the_limit_is_kept_with_the_reason():
    d = decide(obs(last_active=NOW - 600), 3600, NOW)
    assert d.action == "keep" and "idle for 10m00s" in d.reason


def test_each_kind_of_activity_keeps_the_user():
    assert decide(obs(sessions=2, last_active=0), 60, NOW).reason == "2 sessions open"
    assert decide(obs(containers=("train",), last_active=0), 60, NOW).reason == 'container "train" running'
    assert decide(obs(processes=1, last_active=0), 60, NOW).reason == "1 process running on the host"


def test_dead_daemons_and_leftovers_are_collected():
    assert decide(obs(state="dead"), 60, NOW).action == "collect"
    assert decide(obs(state="down", has_leftovers=True), 60, NOW).action == "collect"
    assert decide(obs(state="down"), 60, NOW).action == "none"


def test_a_starting_daemon_is_never_reaped():
    assert decide(obs(state="starting", last_active=0), 0, NOW).action == "keep"


def test_zero_timeout_reaps_any_idle_user():
    assert decide(obs(last_active=NOW), 0, NOW).action == "reap"


def test_a_slurm_job_keeps_the_user_before_any_process_or_idle_time():
    assert decide(obs(jobs=(42,), last_active=0), 0, NOW) == Decision("keep", "Slurm job 42 running")
    assert decide(obs(jobs=(1, 2, 3, 4), processes=9), 0, NOW).reason == "Slurm jobs 1, 2, 3 ... running"
    assert decide(obs(jobs=(42,), sessions=1), 0, NOW).reason == "1 session open"
