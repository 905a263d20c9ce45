"""Red-team probes of berth's Slurm support, before a real hardened dockerd.

The attacker is a job's user, with a shell on the node (in another job of
theirs, say, which pam_slurm_adopt put their ssh login into) and their
job's socket. Each probe is one way to more than the job has; each must
fail. Grants are written by hand as the Prolog writes them (root's, 0600)
and served through the control socket, as in test_slurm_job_sockets.py.
"""

import os
import subprocess
import textwrap

import test_slurm_job_sockets as job_sockets

from berth.proxy import control as proxyctl
from berth.slurm import hooks

slurm_node = job_sockets.slurm_node  # a user up on a node whose config says [slurm] enabled
grant = job_sockets.grant

JOB = 61
GRANTED = ("GPU-aaa",)


# As the user: one keep-alive connection to the job's socket, opened while
# the job runs; on a line from stdin (the job has ended), a create with
# `--gpus all` on it. Prints the HTTP status line, or "closed".
HELD_CONNECTION = textwrap.dedent("""
    import json, socket, sys
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    def ask(method, path, body=b""):
        s.sendall(f"{method} {path} HTTP/1.1\\r\\nHost: docker\\r\\nContent-Type: application/json\\r\\n"
                  f"Content-Length: {len(body)}\\r\\n\\r\\n".encode() + body)
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return "closed"
            data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\\r\\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(body) < length:
            body += s.recv(65536)
        return head.split(b"\\r\\n")[0].decode()
    print(ask("GET", "/_ping"), flush=True)
    sys.stdin.readline()
    body = json.dumps({"Image": sys.argv[2], "Cmd": ["true"], "HostConfig": {"DeviceRequests": [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}]}}).encode()
    try:
        print(ask("POST", "/containers/create", body), flush=True)
    except OSError:
        print("closed", flush=True)
""")


def test_a_connection_held_open_gets_nothing_once_the_job_ended(slurm_node):
    """Closing the job's socket (the Epilog's first step) must close the
    connections already open on it too: one held from outside the job
    would otherwise create a container with the job's GPUs after the
    Epilog removed its containers, and hold GPUs that are the next job's
    (another user's)."""
    user, img, run_dir = slurm_node
    upaths = grant(run_dir, user, JOB, GRANTED)
    proxyctl.serve_job(run_dir, user, JOB)
    held = subprocess.Popen(["runuser", "-u", user, "--", "/usr/bin/python3", "-I", "-c", HELD_CONNECTION,
                             upaths.job_socket(JOB), img], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert held.stdout.readline().strip() == "HTTP/1.1 200 OK"
        proxyctl.drop_job(run_dir, user, JOB)  # the Epilog: the socket closed, then the containers removed
        os.unlink(upaths.job_grant(JOB))
        held.stdin.write("go\n")
        held.stdin.flush()
        answer = held.stdout.readline().strip()
    finally:
        held.stdin.close()
        held.wait(timeout=30)
    left = hooks.remove_containers(upaths.engine_socket, JOB)  # the Epilog's second look finds none
    assert answer == "closed", f"a container of ended job {JOB} was made after its Epilog: {answer}"
    assert not left


# As the user: a create whose body never finishes, under way when the job ends.
BODY_NEVER_SENT = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"POST /containers/create HTTP/1.1\\r\\nHost: docker\\r\\nContent-Type: application/json\\r\\n"
              b"Content-Length: 100000\\r\\n\\r\\n{")
    print("sent", flush=True)
    t0 = time.monotonic()
    s.settimeout(30)
    print("closed" if s.recv(65536) == b"" else "answered", round(time.monotonic() - t0), flush=True)
""")


def test_a_request_under_way_when_the_job_ends_is_cut_off(slurm_node):
    """The Epilog waits (a moment) for a request under way on the job's
    socket, then cuts it off: the job's socket serves nothing after it."""
    user, img, run_dir = slurm_node
    upaths = grant(run_dir, user, JOB, GRANTED)
    proxyctl.serve_job(run_dir, user, JOB)
    trickle = subprocess.Popen(["runuser", "-u", user, "--", "/usr/bin/python3", "-I", "-c", BODY_NEVER_SENT,
                                upaths.job_socket(JOB)], stdout=subprocess.PIPE, text=True)
    try:
        assert trickle.stdout.readline().strip() == "sent"
        proxyctl.drop_job(run_dir, user, JOB)
        os.unlink(upaths.job_grant(JOB))
        what, seconds = trickle.stdout.readline().split()
    finally:
        trickle.wait(timeout=40)
    assert what == "closed" and int(seconds) <= 3, (what, seconds)
