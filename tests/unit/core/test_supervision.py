"""The one supervisor of root's processes, on real (harmless) processes:
a direct start, its record, readiness, TERM then KILL, and the systemd
unit it would run as."""

import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple

import pytest

from berth.core import proc, record, supervision
from berth.core.errors import DaemonError

# A process that says it started, ignores SIGTERM if asked, and carries a mark on its command line.
SCRIPT = """
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(60)
"""


def _supervisor(tmp_path, **kw):
    kw.setdefault("record_path", str(tmp_path / "x.rec"))
    return supervision.Supervisor("the test process", str(tmp_path / "log" / "x.log"), "berth-test.service",
                                  (("Description", "berth: a test"), ("Type", "exec")), **kw)


def _argv(tmp_path, how="polite"):
    script = tmp_path / "mark-x.py"
    script.write_text(SCRIPT)
    return [sys.executable, "-I", str(script), how]


def _started(tmp_path):
    return lambda: "up" in (tmp_path / "log" / "x.log").read_text()


def test_a_direct_start_is_recorded_answers_and_stops_with_sigterm(tmp_path):
    sup = _supervisor(tmp_path, mark=str(tmp_path / "mark-x.py"), banner="starting x")
    rec = sup.start(_argv(tmp_path))
    try:
        assert record.load(sup.record_path) == rec and sup.running() == rec
        assert sup.wait_ready(_started(tmp_path), 10, rec) is True
        assert os.stat(sup.log_file).st_mode & 0o777 == 0o600
        assert open(sup.log_file).readline().startswith("--- berth: starting x at ")
        assert proc.stat(rec.pid).ppid == os.getpid()
        assert os.getsid(rec.pid) == rec.pid, "a session of its own"
        assert proc.cmdline(rec.pid)[:2] == [sys.executable, "-I"]
        with open(f"/proc/{rec.pid}/environ", "rb") as f:
            assert sorted(f.read().split(b"\0")[:-1]) == [b"LANG=C.UTF-8", b"PATH=" + supervision.SYSTEM_PATH.encode()]
        t0 = time.monotonic()
        sup.stop(rec, 10)
        assert time.monotonic() - t0 < 5, "SIGTERM was enough"
    finally:
        supervision.kill_all([rec.pid])
        proc.reap(rec.pid)
    assert sup.running() is None and not proc.alive(rec.pid, rec.start_ticks)


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    sup = _supervisor(tmp_path)
    rec = sup.start(_argv(tmp_path, "stubborn"))
    try:
        sup.wait_ready(_started(tmp_path), 10, rec)
        t0 = time.monotonic()
        sup.stop(rec, 0.5)
        assert 0.5 <= time.monotonic() - t0 < 5
        assert not proc.alive(rec.pid, rec.start_ticks)
    finally:
        supervision.kill_all([rec.pid])
        proc.reap(rec.pid)


def test_a_reused_pid_is_neither_ours_nor_signalled(tmp_path):
    """A record whose pid now belongs to another process (another start
    time, or the command line without the mark) is not running, and stop
    leaves that process alone."""
    sup = _supervisor(tmp_path, mark="/no/such/config.toml")
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        now = proc.stat(stranger.pid).start_ticks
        record.save(sup.record_path, record.Process(stranger.pid, now))
        assert sup.running() is None, "not the mark on its command line"
        reused = record.Process(stranger.pid, now - 1)
        record.save(sup.record_path, reused)
        sup.stop(reused, 0.2)
        with pytest.raises(subprocess.TimeoutExpired):  # a pid with another start time was signalled
            stranger.wait(timeout=0.5)
    finally:
        stranger.kill()
        stranger.wait()


def test_readiness_fails_at_once_when_the_process_exits(tmp_path):
    sup = _supervisor(tmp_path)
    rec = sup.start([sys.executable, "-I", "-c", "import sys; print('no config'); sys.exit(3)"])
    t0 = time.monotonic()
    with pytest.raises(DaemonError, match=r"the test process exited at start \(status 3\): no config") as e:
        sup.wait_ready(lambda: False, 30, rec)
    assert time.monotonic() - t0 < 10 and e.value.hint == f"see {sup.log_file}"


def test_a_second_one_of_a_singleton_that_exits_0_waits_for_the_first(tmp_path):
    sup = _supervisor(tmp_path, record_path="", singleton=True)
    rec = sup.start([sys.executable, "-I", "-c", "pass"])
    first = time.monotonic() + 0.5
    assert sup.wait_ready(lambda: time.monotonic() > first and {"pid": 1}, 10, rec) == {"pid": 1}
    with pytest.raises(DaemonError, match=r"did not answer on /x within 0.2 s") as e:
        sup.wait_ready(lambda: None, 0.2, None, where=" on /x", slower=", or wait longer")
    assert e.value.hint.endswith(", or wait longer")


def test_code_runs_in_the_child_before_the_exec(tmp_path):
    sup = _supervisor(tmp_path)
    marker = tmp_path / "ran"

    def in_child():
        os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600))

    rec = sup.start([sys.executable, "-I", "-c", f"import os; print(os.path.exists({str(marker)!r}))"],
                    in_child=in_child)
    sup.wait_ready(lambda: "True" in open(sup.log_file).read(), 10, None)
    proc.reap(rec.pid)

    def fails():
        raise PermissionError("no filter here")

    with pytest.raises(OSError, match="no filter here"):
        sup.start([sys.executable, "-c", "pass"], in_child=fails)


def test_records_of_todays_berth_are_read(tmp_path):
    """An upgrade must recognise the daemons it finds running: records as
    berth wrote them before the supervisor was one (and keys it does not
    know, from a newer berth) read as before."""
    daemon = tmp_path / "dockerd.rec"
    daemon.write_text("pid=4242\nstart_ticks=99\nstarted_at=1765100000.5\ndockerd=/usr/sbin/dockerd\n"
                      "bridge=bth1001\nmode=hardened\ncontainerd=/run/berth/berth-containerd/containerd.sock\n"
                      "later=1\n")
    os.chmod(daemon, 0o600)
    assert record.load(str(daemon), record.DaemonRecord) == record.DaemonRecord(
        4242, 99, 1765100000.5, "/usr/sbin/dockerd", "bth1001", "hardened",
        "/run/berth/berth-containerd/containerd.sock")
    shared = tmp_path / "containerd.rec"
    shared.write_text("pid=77\nstart_ticks=5\nconfig=/run/berth/berth-containerd/config.toml\n")
    os.chmod(shared, 0o600)
    from berth.daemon.containerd import Record
    assert record.load(str(shared), Record) == Record(77, 5, "/run/berth/berth-containerd/config.toml")
    assert record.load(str(shared)) == record.Process(77, 5)
    shared.write_text("pid=77\n")
    assert record.load(str(shared), Record) is None, "cut short"


def test_the_unit_and_systemd_run_take_the_same_properties():
    props = (("Description", "berth: a test"), ("Type", "exec"), ("KillMode", "process"))
    argv = supervision.systemd_run_argv("berth-x.service", props, ["/bin/x", "-c", "y"])
    assert argv == ["systemd-run", "--unit=berth-x.service", "--collect", "--quiet", "--no-block",
                    "--description=berth: a test", "--property", "Type=exec", "--property", "KillMode=process",
                    "--", "/bin/x", "-c", "y"]
    assert "--no-block" not in supervision.systemd_run_argv("berth-x.service", props, ["/bin/x"], block=True)
    assert supervision.unit_text(props, ["/bin/x", "-c", "y"]) == (
        "[Unit]\nDescription=berth: a test\n\n[Service]\nExecStart=/bin/x -c y\nType=exec\nKillMode=process\n")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_shared_containerds_unit_passes_systemd_analyze_verify(tmp_path):
    from berth.daemon import containerd
    unit = tmp_path / "berth-containerd.service"
    unit.write_text(containerd.unit_text("/var/log/berth/containerd.log", "/run/berth/berth-containerd/config.toml"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in r.stderr.splitlines() if "berth-containerd" in line]
    assert problems == [], r.stderr


def test_the_choice_of_start():
    assert supervision.uses_systemd("systemd") and not supervision.uses_systemd("direct")
    assert supervision.uses_systemd("auto") == supervision.systemd_booted()


# Stand-ins for systemd-run and systemctl (systemd is not PID 1 on every
# test box): they start the command in a session of its own and keep its
# pid as the unit's MainPID, so the supervisor's path through systemd runs.
FAKE_SYSTEMD_RUN = """#!/bin/sh
echo "systemd-run $*" >> "$FAKE_SYSTEMD/calls"
for a; do case "$a" in --unit=*) unit="${a#--unit=}";; esac; done
if [ -s "$FAKE_SYSTEMD/$unit.pid" ] && kill -0 "$(cat "$FAKE_SYSTEMD/$unit.pid")" 2>/dev/null; then
    echo "Unit $unit was already loaded or has a fragment file." >&2; exit 1
fi
while [ "$1" != "--" ]; do shift; done; shift
setsid "$@" > /dev/null 2>&1 &
echo $! > "$FAKE_SYSTEMD/$unit.pid"
"""
FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_SYSTEMD/calls"
for unit; do :; done
pid=$(cat "$FAKE_SYSTEMD/$unit.pid" 2>/dev/null)
case "$1" in
show) if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; else echo 0; fi;;
stop) [ -n "$pid" ] && kill "$pid" 2>/dev/null
      # till it is gone or a zombie: when the integration harness has made pytest a
      # subreaper, the orphan is pytest's to reap, and pytest waits on this script
      while kill -0 "$pid" 2>/dev/null && [ "$(sed 's/.*) //' /proc/$pid/stat | cut -c1)" != Z ]; do
          sleep 0.02
      done;;
esac
exit 0
"""


Recorded = namedtuple("Recorded", "pid start_ticks config")


@pytest.fixture
def fake_systemd(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("systemd-run", FAKE_SYSTEMD_RUN), ("systemctl", FAKE_SYSTEMCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMD", str(tmp_path))
    (tmp_path / "calls").write_text("")
    return tmp_path / "calls"


def test_as_a_unit_it_is_started_recorded_by_its_main_pid_and_stopped_through_systemd(tmp_path, fake_systemd):
    sup = _supervisor(tmp_path, use_systemd=True, mark=str(tmp_path / "mark-x.py"))
    rec = sup.start(_argv(tmp_path), unit_argv=[*_argv(tmp_path), "unit"])
    try:
        assert rec.pid and sup.running() == rec == record.load(sup.record_path)
        assert proc.cmdline(rec.pid)[-1] == "unit", "the unit's own command"
        calls = fake_systemd.read_text().splitlines()
        assert calls[0] == "systemctl reset-failed berth-test.service"
        assert calls[1].startswith("systemd-run --unit=berth-test.service --collect --quiet --no-block "
                                   "--description=berth: a test --property Type=exec -- ")
        with pytest.raises(DaemonError, match="berth-test.service runs, but not as berth started it"):
            sup.start(_argv(tmp_path))
        sup.stop(rec, 10)
        assert "systemctl stop berth-test.service" in fake_systemd.read_text()
        assert not proc.alive(rec.pid, rec.start_ticks)
    finally:
        supervision.kill_all([rec.pid])


def test_a_unit_that_systemd_restarts_is_followed(tmp_path, fake_systemd):
    """containerd's unit has Restart=always: another process may be the
    unit's now, and the record follows it (its command line checked)."""
    sup = _supervisor(tmp_path, use_systemd=True, mark=str(tmp_path / "mark-x.py"), follows_unit=True, block=True,
                      kind=Recorded, fields={"config": "c.toml"})
    first = sup.start(_argv(tmp_path))
    assert "--no-block" not in fake_systemd.read_text()
    again = subprocess.Popen(_argv(tmp_path), stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        supervision.kill_all([first.pid])
        (tmp_path / "berth-test.service.pid").write_text(f"{again.pid}\n")
        rec = sup.running()
        assert rec == Recorded(again.pid, proc.stat(again.pid).start_ticks, "c.toml") == record.load(sup.record_path,
                                                                                                   Recorded)
        # a pid of the unit without the mark on its command line is not the process
        again.kill()
        again.wait()
        (tmp_path / "berth-test.service.pid").write_text(f"{os.getpid()}\n")
        assert sup.running() is None
    finally:
        again.kill()
        again.wait()
        proc.reap(first.pid)


def test_a_start_loads_neither_logging_nor_subprocess(tmp_path):
    """The prelaunch starts dockerd before the CLI loads anything: a start
    that imported logging (12 ms) would hold up the bridge that dockerd
    looks for ~60 ms into its own start."""
    code = (f"import sys\nfrom berth.core import supervision\n"
            f"sup = supervision.Supervisor('x', {str(tmp_path / 'x.log')!r}, 'x.service', "
            f"record_path={str(tmp_path / 'x.rec')!r})\n"
            f"rec = sup.start(['/bin/true'])\n"
            f"print(sorted(m for m in ('logging', 'subprocess', 'signal', 'json', 're') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stderr
