"""The policy proxy from berth's side: ask it, start it where none answers,
stop it. (service.py is the service itself.)

It is found by its control socket, not by a pidfile: only root reaches
that socket, so an answer on it is from berth's proxy, and the answer
carries its pid. One proxy serves a run dir; a second one started in a
race finds the first one's lock and exits 0.
"""

import _socket
import os
import sys

from berth.core import paths, supervision
from berth.core.errors import DaemonError
from berth.core.paths import SYSTEM_PATH

UNIT = "berth-proxy.service"


class ProxyError(DaemonError):
    pass


def control_path(run_dir):
    return os.path.join(paths.proxy_dir(str(run_dir)), "ctl.sock")


def ask(run_dir, *words, timeout=5.0):
    """Send one request; the answer after "ok" ('' if none). Raises
    OSError when no proxy answers, ProxyError when it refuses."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(control_path(run_dir))
        s.sendall((" ".join(words) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    answer = data.decode(errors="replace").strip()
    if answer == "ok" or answer.startswith("ok "):
        return answer[3:]
    raise ProxyError(f"the policy proxy refused '{' '.join(words)}': {answer or '(no answer)'}",
                     hint="see proxy.log in berth's log dir")


def ping(run_dir, timeout=2.0):
    """{'pid': ..., 'users': ..., 'jobs': ..., 'connections': ...} from the running proxy, or None."""
    try:
        answer = ask(run_dir, "ping", timeout=timeout)
        return {k: int(v) for k, v in (w.split("=", 1) for w in answer.split())}
    except (OSError, ValueError, ProxyError):
        return None


def serve_job(run_dir, user, job_id, timeout=5.0):
    """Have the proxy serve a Slurm job's socket, held to the grant in
    place (job-<id>.grant in the user's run dir). Raises OSError when no
    proxy answers, ProxyError when it cannot (no grant, no spec)."""
    ask(run_dir, "serve-job", user, str(int(job_id)), timeout=timeout)


def drop_job(run_dir, user, job_id, timeout=5.0):
    """Have the proxy close a job's socket and remove it; raises as serve_job."""
    ask(run_dir, "drop-job", user, str(int(job_id)), timeout=timeout)


def stats(run_dir, timeout=2.0):
    """{user: {'uid', 'connections', 'requests', 'refused', 'jobs': {id: {...}}}} from the running proxy, or None."""
    try:
        import json

        return json.loads(ask(run_dir, "stats", timeout=timeout))
    except (OSError, ValueError, ProxyError):
        return None


def refusals(run_dir, user=None, timeout=5.0):
    """The refusals.document of `user`, or of every user served. Raises
    OSError when no proxy answers, ProxyError when it serves no such user."""
    import json

    return json.loads(ask(run_dir, "refusals", *([user] if user else []), timeout=timeout))


def argv(run_dir, python=None):
    # -I: no PYTHON* variables, no user site; the proxy reads nothing a user shapes.
    return [python or sys.executable, "-I", "-m", "berth", "proxy", "--run-dir", str(run_dir)]


def unit_properties(log_file):
    return (
        ("Description", "berth: policy proxy in front of users' Docker daemons"),
        ("Type", "exec"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "1048576"),
        ("Environment", f"PATH={SYSTEM_PATH}"),
        ("StandardOutput", f"append:{log_file}"),
        ("StandardError", f"append:{log_file}"),
    )


def unit_text(run_dir, log_file, python):
    return supervision.unit_text(unit_properties(log_file), argv(run_dir, python))


class ProxySupervisor:
    """Starts the proxy detached (its own session, or a systemd unit) and
    waits for its control socket: the supervisor (core/supervision.py)
    with no record, since the proxy is found by its control socket."""

    def __init__(self, run_dir, log_dir, use_systemd=False, python=None):
        self.run_dir = str(run_dir)
        self.log_file = paths.own_log(log_dir, paths.PROXY_LOG)
        self.use_systemd = use_systemd
        self.python = python or sys.executable
        # A second proxy, started in a race, finds the first one's lock and exits 0.
        self.process = supervision.Supervisor("the policy proxy", self.log_file, UNIT, unit_properties(self.log_file),
                                              use_systemd=use_systemd, singleton=True, error=ProxyError)
        self.started = None  # the proxy this object started

    def launch(self):
        """Start a proxy unless one answers; returns at once (see wait_ready)."""
        if ping(self.run_dir, timeout=1.0) is not None:
            return False
        self.started = self.process.start(argv(self.run_dir, self.python))
        return True

    def wait_ready(self, timeout=10.0):
        """Until a proxy answers; its ping. A child of ours that failed fails
        this at once; one that exited 0 found another proxy, which will answer."""
        return self.process.wait_ready(lambda: ping(self.run_dir, timeout=1.0), timeout, self.started)

    def ensure(self):
        self.launch()
        return self.wait_ready()

    def stop(self, timeout=10.0):
        """Stop the proxy that answers, if any; users' sockets then refuse."""
        info = ping(self.run_dir)
        if info is None:
            return False
        rec = supervision.identify(info["pid"])
        if rec is not None:
            self.process.stop(rec, timeout)
        return True

    def log_tail(self, lines=3):
        return self.process.log_tail(lines)
