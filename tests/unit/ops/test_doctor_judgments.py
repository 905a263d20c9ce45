from berth.ops import doctor, install


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


def test_berths_ranges_must_not_overlap_any_other():
    from berth.daemon.subids import SubId
    ok = [SubId("alice", 100000, 65536), SubId("berth-1001", 1001, 1), SubId("berth-1001", 10**9, 65536)]
    (c,) = doctor.judge_subids(ok, ok)
    assert c.level == doctor.OK
    clash = ok + [SubId("bob", 10**9 + 100, 10)]
    bad = doctor.judge_subids(clash, ok)
    assert [c.level for c in bad] == [doctor.FAIL] and "berth-1001's range" in bad[0].detail


def test_two_of_berths_ranges_overlapping_are_one_finding():
    from berth.daemon.subids import SubId
    two = [SubId("berth-1001", 10**9, 65536), SubId("berth-1002", 10**9 + 5, 65536)]
    assert len(doctor.judge_subids(two, [])) == 1
    # a person's own account named berth-something with a small range is not berth's range
    person = [SubId("berth-ops", 10**9, 10), SubId("alice", 10**9, 10)]
    assert doctor.judge_subids(person, person)[0].level == doctor.OK


def test_a_directory_as_a_passwd_source_is_a_warning():
    (c,) = doctor.judge_id_sources("passwd:         files sss systemd\ngroup: files\n", 10**9)
    assert c.level == doctor.WARN and "sss" in c.detail and "subid_start" in c.fix
    assert doctor.judge_id_sources("passwd: files systemd # comment ldap\n", 10**9) == []
    assert doctor.judge_id_sources("", 10**9) == []


def test_the_proxy_is_judged_against_the_hardened_daemons_that_run():
    info = {"pid": 77, "users": 1, "connections": 0}
    assert doctor.judge_proxy([], None, {}).level == doctor.OK  # nobody needs it yet
    c = doctor.judge_proxy(["alice", "bob"], None, {})
    assert c.level == doctor.FAIL and "alice, bob refuse" in c.detail and c.fix.startswith("berth up alice")
    c = doctor.judge_proxy(["alice", "bob"], info, {"alice": {}})
    assert c.level == doctor.FAIL and "does not serve bob" in c.detail and c.fix == "berth up bob"
    c = doctor.judge_proxy(["alice"], info, {"alice": {}})
    assert c.level == doctor.OK and "pid 77 serves 1 user(s)" in c.detail


def test_the_shared_containerd_is_judged_against_the_daemons_on_it():
    from berth.ops import doctor
    sock = "/run/berth/berth-containerd/containerd.sock"
    assert doctor.judge_containerd("up", 9, ["alice"], sock).level == doctor.OK
    assert doctor.judge_containerd("own", None, [], "").level == doctor.OK
    assert doctor.judge_containerd("down", None, [], sock).level == doctor.OK  # nobody needs it yet
    down = doctor.judge_containerd("down", None, ["alice", "bob"], sock)
    assert down.level == doctor.FAIL and "alice, bob keep running" in down.detail and "berth up alice" in down.fix
    hung = doctor.judge_containerd("hung", 9, ["alice"], sock)
    assert hung.level == doctor.FAIL and hung.fix.startswith("kill 9")
    gone = doctor.judge_containerd("down", None, ["alice"], "/run/containerd/containerd.sock", external=True)
    assert gone.level == doctor.FAIL and "systemctl start containerd" in gone.fix


def test_confinement_warns_of_an_unfiltered_daemon_first_then_one_outside_berths_namespace():
    assert doctor.judge_confinement([], []).level == doctor.OK
    unfiltered = doctor.judge_confinement(["alice"], ["alice"])
    assert unfiltered.level == doctor.WARN and "device nodes" in unfiltered.detail
    outside = doctor.judge_confinement([], ["bob"])
    assert outside.level == doctor.WARN and "mount namespace" in outside.detail


def test_buildkit_is_judged_as_the_proxy_judges_it():
    assert doctor.judge_buildkit("Docker version 20.10.24+dfsg1, build 5d6db84", cgroupfs=True).level == doctor.OK
    newer = doctor.judge_buildkit("Docker version 25.0.3, build f417435", cgroupfs=True)
    assert newer.level == doctor.WARN and "25.0.3" in newer.detail and "DOCKER_BUILDKIT=0" in newer.fix
    assert doctor.judge_buildkit("", cgroupfs=True).level == doctor.WARN  # unknown: as the proxy, refused
    systemd = doctor.judge_buildkit("Docker version 20.10.24+dfsg1, build 5d6db84", cgroupfs=False)
    assert systemd.level == doctor.WARN and "systemd" in systemd.detail


# --- Slurm's hooks --------------------------------------------------------------------

def _wrappers(python="/opt/berth/bin/python"):
    return install.slurm_wrappers(python, "/etc/berth/berth.toml")


def test_slurm_wrappers_missing_open_or_stale_are_said():
    wanted = _wrappers()
    prolog, epilog, task = wanted
    found = {prolog: (wanted[prolog], 0, 0o755), epilog: (wanted[epilog], 1000, 0o755), task: None}
    checks = {c.name: c for c in doctor.judge_slurm_wrappers(wanted, found)}
    assert checks["Slurm Prolog"].level == doctor.OK
    assert checks["Slurm Epilog"].level == doctor.FAIL and "not root's alone" in checks["Slurm Epilog"].detail
    assert checks["Slurm TaskProlog"].level == doctor.FAIL and checks["Slurm TaskProlog"].fix == \
        "berth install --slurm"
    stale = {p: (t, 0, 0o755) for p, t in _wrappers("/usr/bin/python3").items()}
    assert {c.level for c in doctor.judge_slurm_wrappers(wanted, stale)} == {doctor.WARN}


def test_slurm_conf_naming_the_wrappers_directly_or_through_a_glob_is_ok():
    lines = "\n".join(install.slurm_conf_lines())
    real = lambda value: [value] if "*" not in value else ["/usr/local/lib/berth/slurm/prolog", "/x"]  # noqa: E731
    assert doctor.judge_slurm_conf("/etc/slurm/slurm.conf", lines, real).level == doctor.OK
    globbed = lines.replace("Prolog=/usr/local/lib/berth/slurm/prolog", "Prolog=/etc/slurm/prolog.d/*") \
        .replace("PrologFlags=Alloc", "PrologFlags=Contain,Alloc  # both")
    assert doctor.judge_slurm_conf("/etc/slurm/slurm.conf", globbed, real).level == doctor.OK
    bare = doctor.judge_slurm_conf("/etc/slurm/slurm.conf", "Prolog=/etc/slurm/site-prolog\n", real)
    assert bare.level == doctor.FAIL and "PrologFlags=Alloc" in bare.detail and "TaskProlog=" in bare.detail
    assert doctor.judge_slurm_conf("/etc/slurm/slurm.conf", None, real).level == doctor.WARN


def test_doctor_checks_an_installed_slurm_node(tmp_path):
    import os

    from berth.core import config

    cfg = config.parse({"slurm": {"enabled": True}})
    host = install.Host(str(tmp_path))
    for path, text in install.slurm_wrappers("/opt/berth/bin/python").items():
        host.apply(install.Change(path, text, "", 0o755))
    os.makedirs(tmp_path / "etc/slurm/prolog.d")
    os.symlink(f"{install.SLURM_DIR}/prolog".replace("/usr", str(tmp_path / "usr"), 1),
               tmp_path / "etc/slurm/prolog.d/50-berth")
    conf = "\n".join(install.slurm_conf_lines()).replace(f"Prolog={install.SLURM_DIR}/prolog",
                                                           "Prolog=/etc/slurm/prolog.d/*")
    (tmp_path / "etc/slurm/slurm.conf").write_text(conf + "\n")
    checks = doctor.check_slurm(cfg, str(tmp_path), "/opt/berth/bin/python", environ={})
    expected = doctor.OK if os.geteuid() == 0 else doctor.FAIL  # root's wrappers, when root made them
    assert [(c.name, c.level) for c in checks] == [
        ("Slurm Prolog", expected), ("Slurm Epilog", expected), ("Slurm TaskProlog", expected),
        ("slurm.conf", doctor.OK)]
    assert doctor.check_slurm(config.Config(), str(tmp_path), None) == []  # [slurm] not enabled
