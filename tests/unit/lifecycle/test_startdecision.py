"""`up`'s start decision, one row per case: what it found -> what becomes of it."""

import pytest

from berth.lifecycle.startdecision import ADOPT, REPLACE, RESTART, START, WARM, Found, decide, launched_elsewhere


def found(**kw):
    return Found(user="alice", **kw)


NOTHING = dict(running=False)
RUNS = dict(running=True)
OLD = dict(running=True, own_socket=False)  # an older berth's: the user's socket is dockerd's own
LAUNCHED = dict(running=True, prelaunched=True, is_prelaunched=True, own_socket=False)  # no socket yet

CASES = [
    # (what up found, its action, a warning?)
    (NOTHING, START, False),
    (RUNS, WARM, False),
    (dict(RUNS, mode="trusted"), WARM, True),
    (OLD, RESTART, True),
    (dict(OLD, mode="trusted"), RESTART, True),
    (dict(LAUNCHED, as_planned=True), ADOPT, False),
    (dict(LAUNCHED, as_planned=False), REPLACE, False),
    (dict(LAUNCHED, as_planned=True, own_socket=True), ADOPT, False),
    (dict(prelaunched=True, running=False), START, True),  # it exited at start
]


@pytest.mark.parametrize(("facts", "action", "warn"), CASES, ids=[
    "nothing runs", "warm", "warm in another mode", "an older berth's daemon",
    "an older berth's daemon in another mode", "prelaunched as planned", "prelaunched from an outdated plan",
    "prelaunched with its socket made", "prelaunched, exited"])
def test_the_decision(facts, action, warn):
    start = decide(found(**facts))
    assert (start.action, start.warn) == (action, warn)
    assert start.starts == (action != WARM)


def test_every_action_has_a_case():
    assert {action for _, action, _ in CASES} == {WARM, RESTART, ADOPT, REPLACE, START}


def test_a_prelaunched_dockerd_is_never_taken_for_an_older_berths():
    """Its socket is not made yet: the upgrade guard does not apply to it."""
    assert decide(found(**dict(LAUNCHED, as_planned=True))).action == ADOPT


def test_the_reasons_name_the_user_and_what_happens():
    assert "restarting it" in decide(found(**OLD)).reason and "alice" in decide(found(**OLD)).reason
    assert "outdated plan" in decide(found(**LAUNCHED)).reason
    assert "exited at start" in decide(found(prelaunched=True, running=False)).reason
    assert "berth down alice" in decide(found(**dict(RUNS, mode="trusted"))).reason
    assert decide(found(**RUNS)).reason == "" and decide(found(**NOTHING)).reason == ""


PLAN = {"identity": "1:2:3:4", "run_dir": "/run/berth/alice", "lock": "/var/lib/berth/lock/users/alice.lock"}


@pytest.mark.parametrize(("changed", "elsewhere"), [
    ({}, False),
    ({"identity": "1:2:3:5"}, True),  # the config was saved between the launch and its reading
    ({"run_dir": "/run/other/alice"}, True),
    ({"lock": "/var/lib/other/alice.lock"}, True),
])
def test_a_launch_elsewhere_than_the_config_says(changed, elsewhere):
    now = dict(PLAN, **changed)
    assert launched_elsewhere(PLAN, now["run_dir"], now["lock"], now["identity"]) == elsewhere


def test_no_config_identity_is_elsewhere():
    assert launched_elsewhere(PLAN, PLAN["run_dir"], PLAN["lock"], None)
