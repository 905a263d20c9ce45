from berth import doctor


def judge(**kw):
    facts = dict(cron_file=False, timer_file=False, cron_running=False, systemd=False, timer_enabled=False)
    facts.update(kw)
    return doctor.judge_reaper_schedule(**facts)


def test_a_cron_file_nothing_runs_reaps_nobody():
    c = judge(cron_file=True, cron_running=False)
    assert c.level == doctor.WARN and "no cron daemon runs" in c.detail and "service cron start" in c.fix
    assert judge(cron_file=True, cron_running=True).level == doctor.OK


def test_a_timer_must_be_enabled():
    c = judge(timer_file=True, systemd=True, timer_enabled=False)
    assert c.level == doctor.WARN and c.fix == "systemctl enable --now berth-reap.timer"
    assert judge(timer_file=True, systemd=True, timer_enabled=True).level == doctor.OK


def test_no_schedule_at_all():
    c = judge()
    assert c.level == doctor.WARN and c.fix == "berth install"


def test_under_another_root_what_runs_is_not_judged():
    assert judge(cron_file=True, cron_running=None).level == doctor.OK
