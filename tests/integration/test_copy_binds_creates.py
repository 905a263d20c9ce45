"""No create through the proxy makes a bind that is not a pin, whatever
the spelling (so no copy goes through one as root)."""

import json
import pwd

from conftest import DEBIAN_CLI
from test_copy_binds_answers import raw


def _post(sock, target, body):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"POST {target} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    out = b""
    while c := s.recv(65536):
        out += c
    s.close()
    return out


def test_no_raw_bind_through_create(harness):
    a, b = harness.add_user(), harness.add_user()
    harness.berth("up", a)
    made = []
    try:
        img = harness.import_busybox(a)
        src = pwd.getpwnam(b).pw_dir  # B's home: readable by A (0755)
        sock = harness.sock(a)
        bodies = {
            "binds": {"HostConfig": {"Binds": [f"{src}:/x"]}},
            "lower-keys": {"hostconfig": {"binds": [f"{src}:/x"]}},
            "dup-keys": {"HostConfig": {"Binds": [], "binds": [f"{src}:/x"]}},
            "mounts-lower": {"HostConfig": {"Mounts": [{"type": "bind", "source": src, "target": "/x"}]}},
            "mounts-dup-type": {"HostConfig": {"Mounts": [{"Type": "volume", "type": "bind", "Source": src,
                                                            "Target": "/x"}]}},
            "two-hostconfig": {"HostConfig": {}, "hostConfig": {"Binds": [f"{src}:/x"]}},
        }
        leaks = []
        for i, (label, spec) in enumerate(bodies.items()):
            spec = {"Image": img, "Cmd": ["true"], **spec}
            raw_body = json.dumps(spec).encode()
            if label == "dup-keys":
                raw_body = (b'{"Image":"%s","Cmd":["true"],"HostConfig":{"Binds":[],"binds":["%s:/x"]}}'
                            % (img.encode(), src.encode()))
            if label == "two-hostconfig":
                raw_body = (b'{"Image":"%s","Cmd":["true"],"HostConfig":{},"hostConfig":{"Binds":["%s:/x"]}}'
                            % (img.encode(), src.encode()))
            out = _post(sock, f"/v1.41/containers/create?name=rb{i}", raw_body)
            status = out.split(b" ")[1]
            print(label, out.split(b"\r\n")[0], out.rpartition(b"\r\n\r\n")[2][:200])
            if status == b"201":
                made.append(f"rb{i}")
                st, hd, ins = raw(sock, "GET", f"/v1.41/containers/rb{i}/json")
                engine_view = harness.docker(a, "inspect", "-f", "{{json .Mounts}}", f"rb{i}", cli=DEBIAN_CLI).stdout
                print("   mounts (proxy view):", engine_view.strip())
                from berth.core import paths
                eng = paths.in_run_dir(f"{harness.root}/run", a).engine_socket
                import subprocess
                r = subprocess.run(["curl", "-s", "--unix-socket", eng, f"http://d/v1.41/containers/rb{i}/json"],
                                   capture_output=True, text=True)
                mounts = json.loads(r.stdout).get("Mounts")
                print("   mounts (dockerd's own):", mounts)
                if any(m.get("Type") == "bind" and "/pins/" not in m.get("Source", "") for m in mounts):
                    leaks.append(label)
        assert not leaks, leaks
    finally:
        for n in made:
            harness.docker(a, "rm", "-f", n, check=False, cli=DEBIAN_CLI, as_user=a)
        harness.berth("down", a, check=False)
