"""A slow reader of a stopped container's copy holds up none of the user's starts."""

import os
import pwd
import socket
import subprocess
import time

from conftest import DEBIAN_CLI


def test_slow_cp_out_of_stopped_container_blocks_starts(harness):
    a = harness.add_user()
    harness.berth("up", a)
    try:
        img = harness.import_busybox(a)
        home = pwd.getpwnam(a).pw_dir
        os.makedirs(f"{home}/w", exist_ok=True)
        os.chown(f"{home}/w", pwd.getpwnam(a).pw_uid, -1)
        harness.docker(a, "create", "--name", "st", "-v", f"{home}/w:/w", img, "true", cli=DEBIAN_CLI, as_user=a)
        s = socket.socket(socket.AF_UNIX)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(harness.sock(a))
        s.sendall(b"GET /v1.41/containers/st/archive?path=/ HTTP/1.1\r\nHost: d\r\n\r\n")
        time.sleep(2)  # dockerd streams; we do not read
        t0 = time.time()
        try:
            r = subprocess.run(["runuser", "-u", a, "--", DEBIAN_CLI, "-H", f"unix://{harness.sock(a)}", "run",
                                "--rm", img, "true"], capture_output=True, text=True, timeout=20)
            took = time.time() - t0
            print("the run took", took, r.returncode, r.stderr[-200:])
            blocked = False
        except subprocess.TimeoutExpired:
            print("the run still waits after 20 s")
            blocked = True
        s.close()
        time.sleep(2)
        assert not blocked, "a copy out of a stopped container that the client reads slowly holds every start"
    finally:
        harness.docker(a, "rm", "-f", "st", check=False, cli=DEBIAN_CLI, as_user=a)
        harness.berth("down", a, check=False)
