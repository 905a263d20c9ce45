"""The conformance corpus, tier 2: each scenario replayed against a user's
dockerd on its own socket (root's alone in hardened mode) and through the
user's socket (berth's proxy), each side from the state its setup makes,
and the answers compared: status, content type, API version, the body
de-framed with the listed fields masked (corpus.normalised). A `same`
exchange must answer alike; a refusal must be berth's 403 with its reason.
Setup and teardown use the docker CLI in /usr/local/bin, else Debian's
(or compose), straight against dockerd."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "corpus", "tools"))
import corpus  # noqa: E402

SCENARIOS = dict(corpus.scenarios())
# Setup and teardown only (never what is compared): the newer CLI where there is one.
SETUP_CLI = next(c for c in ("/usr/local/bin/docker", "/usr/bin/docker") if os.path.exists(c))
# Which exchanges differ and why, beyond masking: none may be left undeclared.
TIMINGS = []
REFUSED = []  # (scenario, request, what dockerd itself answered): the table's last column


@pytest.fixture(scope="module")
def user_daemon(harness):
    """(the user's socket, dockerd's own socket, the corpus files) for a user up in hardened mode."""
    from berth.core import paths
    user = harness.add_user()
    harness.berth("up", user)
    harness.import_busybox(user)
    engine = paths.for_user(harness.cfg(), user).engine_socket
    shutil.rmtree(corpus.FILES_DIR, ignore_errors=True)
    files = corpus.make_files(corpus.FILES_DIR)
    uid = pwd.getpwnam(user).pw_uid
    for path in (files["bind_dir"], files["out"]):
        os.chown(path, uid, -1)
    try:
        yield harness.sock(user), engine, files
    finally:
        shutil.rmtree(corpus.FILES_DIR, ignore_errors=True)
        harness.berth("down", user)
        if TIMINGS:
            total = sum(t for _, t in TIMINGS)
            print(f"\ncorpus: {len(TIMINGS)} scenarios replayed in {total:.1f} s")
            for name, line, status in REFUSED:
                print(f"  refused by berth: {name}: {line}: dockerd answers {status}")


def direct(step, engine, files):
    argv = corpus.expand(step, files)
    if argv[0] == "docker":
        argv = [SETUP_CLI, *argv[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=files["work"],
                          env=dict(os.environ, DOCKER_HOST=f"unix://{engine}"))


def exec_setup(spec, engine):
    """An exec made straight on dockerd, its id bound to a placeholder."""
    import socket
    body = json.dumps({"Cmd": spec["cmd"], "AttachStdout": True, "AttachStderr": True}).encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(engine)
        s.sendall(b"POST /containers/%s/exec HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (spec["container"].encode(), len(body), body))
        answer = corpus.read_response(corpus.Source(sock=s, deadline=time.monotonic() + 10), b"POST")
    return {spec["bind"]: json.loads(answer.body)["Id"]}


def side(scenario, socket_path, engine, files):
    """The scenario's answers on one socket, from the state its setup makes; teardown after."""
    for step in scenario.get("setup", ()):
        r = direct(step, engine, files)
        assert r.returncode == 0, f"setup {step}: {r.stderr}"
    try:
        ids = exec_setup(scenario["exec_setup"], engine) if "exec_setup" in scenario else {}
        replay = corpus.Replay(socket_path, scenario, ids=ids, budget=scenario.get("budget", 15),
                               until=refused_at(scenario))
        answers = replay.run()
        return answers, replay.errors
    finally:
        for step in scenario.get("teardown", ()):
            direct(step, engine, files)


def refused_at(scenario):
    """When the first request berth refuses was sent: what the client sent
    later, it sent because dockerd took that request when it was recorded
    (a `run` goes on to attach and start), and it is neither sent nor compared."""
    return min((ex["at"] for conn in scenario["connections"] for ex in conn["exchanges"]
                if ex["verdict"] != "same"), default=None)


def _marked(name):
    why = SCENARIOS[name].get("xfail")
    return pytest.param(name, marks=pytest.mark.xfail(reason=why, strict=False)) if why else name


@pytest.mark.parametrize("name", [_marked(n) for n in sorted(SCENARIOS)])
def test_scenario_direct_and_through_berth(user_daemon, name):
    listen, engine, files = user_daemon
    scenario = SCENARIOS[name]
    started = time.monotonic()
    direct_answers, direct_errors = side(scenario, engine, engine, files)
    berth_answers, berth_errors = side(scenario, listen, engine, files)
    TIMINGS.append((name, time.monotonic() - started))
    differences = []
    refused = refused_at(scenario)
    for ci, conn in enumerate(scenario["connections"]):
        for ei, ex in enumerate(conn["exchanges"]):
            if refused is not None and ex["at"] > refused:
                continue
            line = corpus.unb64(ex["request"]).split(b"\r\n", 1)[0].decode("latin-1")[:100]
            theirs, ours = direct_answers.get((ci, ei)), berth_answers.get((ci, ei))
            if ex["verdict"].startswith("refuse:"):
                REFUSED.append((name, line, theirs[0].status if theirs else None))
                ok = ours is not None and ours[0].status == ex.get("status", 403) and (
                    not ours[0].body or json.loads(ours[0].body)["message"] == "berth: " + ex["verdict"][7:])
                if not ok:
                    differences.append(f"{line}: expected berth's refusal, got {ours}")
                continue
            if theirs is None and ours is None:
                continue  # never sent on either side (the client had stopped before it)
            mask = dict(scenario.get("mask", {}), **ex.get("mask", {}))
            how = ex.get("body", scenario.get("body", "compare"))
            a = [_compared(r, mask, how) for r in theirs or [None]]
            b = [_compared(r, mask, how) for r in ours or [None]]
            if a != b:
                differences.append(f"{line}:" + "".join(f"\n  {where}: dockerd {x!r:.300} / berth {y!r:.300}"
                                                        for where, x, y in corpus.differences(a, b)))
    # after a refusal (berth's, or dockerd's own) the client had no id to go on with
    errors = [e for e in direct_errors + berth_errors if refused is None or "no id yet" not in e]
    assert not differences, f"{name}: undeclared differences:\n" + "\n".join(differences) + (
        f"\nreplay: dockerd {direct_errors}, berth {berth_errors}" if direct_errors or berth_errors else "")
    assert not errors, errors


def _compared(answer, mask, how):
    if answer is None:
        return None
    if not answer.complete:  # a stream cut at the budget: what came is not comparable
        how = "status-only"
    return corpus.normalised(answer, mask, how)
