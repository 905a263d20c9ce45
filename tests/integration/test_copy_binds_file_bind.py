"""`docker cp` on a stopped container's bind of a single file."""

import os
import pwd

from conftest import DEBIAN_CLI
from test_copy_binds_answers import raw


def test_file_bind_of_a_stopped_container(harness):
    a = harness.add_user()
    harness.berth("up", a)
    try:
        img = harness.import_busybox(a)
        home = pwd.getpwnam(a).pw_dir
        with open(f"{home}/app.conf", "w") as f:
            f.write("setting=1\n")
        os.chown(f"{home}/app.conf", pwd.getpwnam(a).pw_uid, -1)
        harness.docker(a, "create", "--name", "fb", "-v", f"{home}/app.conf:/etc/app.conf", img, "true",
                       cli=DEBIAN_CLI, as_user=a)
        sock = harness.sock(a)
        res = {m: raw(sock, m, "/v1.41/containers/fb/archive?path=/etc/app.conf") for m in ("HEAD", "GET")}
        for m, r in res.items():
            print(m, r[0], r[2][:200])
        assert res["HEAD"][0] == 200 and res["GET"][0] == 200 and b"setting=1" in res["GET"][2], res
    finally:
        harness.docker(a, "rm", "-f", "fb", check=False, cli=DEBIAN_CLI, as_user=a)
        harness.berth("down", a, check=False)
