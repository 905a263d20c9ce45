"""The policy proxy in front of a real dockerd: the docker CLI through it,
refusals as the CLI shows them, and raw HTTP that tries to get past it."""

import json
import os
import pwd
import socket
import subprocess
import time

import pytest
from conftest import DEBIAN_CLI


@pytest.fixture(scope="module")
def proxied(harness):
    """A user up in hardened mode: their socket is berth's policy proxy."""
    user = harness.add_user()
    harness.berth("up", user)
    img = harness.import_busybox(user)
    yield user, img, harness.sock(user)
    harness.berth("down", user)


def docker(listen, *args, cli, check=True, stdin=None, as_user=None):
    cmd = [cli, "-H", f"unix://{listen}", *args]
    env = dict(os.environ)
    if as_user:
        cmd = ["runuser", "-u", as_user, "--", *cmd]
        env["HOME"] = pwd.getpwnam(as_user).pw_dir
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin, env=env)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_ps_and_run_through_the_proxy(proxied, docker_cli):
    _, img, listen = proxied
    assert "net" in docker(listen, "ps", "--format", "{{.Names}}", cli=docker_cli).stdout.split()
    assert docker(listen, "run", "--rm", img, "echo", "through-the-proxy",
                  cli=docker_cli).stdout.strip() == "through-the-proxy"


def test_attach_with_stdin_both_ways(proxied, docker_cli):
    _, img, listen = proxied
    r = docker(listen, "run", "--rm", "-i", img, "sh", "-c", "read line; echo got:$line", stdin="hello\n",
               cli=docker_cli)
    assert r.stdout.strip() == "got:hello"


def test_exec_and_cp_through_the_proxy(proxied, tmp_path, docker_cli):
    _, img, listen = proxied
    docker(listen, "run", "-d", "--name", "px-exec", img, "sleep", "600", cli=docker_cli)
    try:
        r = docker(listen, "exec", "-i", "px-exec", "sh", "-c", "cat > /tmp/in; cat /tmp/in", stdin="data\n",
                   cli=docker_cli)
        assert r.stdout == "data\n"
        payload = tmp_path / "payload"
        payload.write_bytes(os.urandom(3 << 20))
        docker(listen, "cp", str(payload), "px-exec:/tmp/payload", cli=docker_cli)
        docker(listen, "cp", "px-exec:/tmp/payload", str(tmp_path / "back"), cli=docker_cli)
        assert (tmp_path / "back").read_bytes() == payload.read_bytes()
    finally:
        docker(listen, "rm", "-f", "px-exec", check=False, cli=docker_cli)


@pytest.mark.parametrize("args, words", [
    (["--privileged"], "berth: --privileged; run without it"),
    (["--userns=host"], "berth: --userns=host"),
    (["--pid=host"], "berth: --pid=host"),
    (["--ipc=host"], "use --shm-size"),
    (["--cap-add", "SYS_ADMIN"], "capabilities beyond Docker's default set"),
    (["--security-opt", "seccomp=unconfined"], "seccomp"),
    (["--device", "/dev/sda"], "devices other than GPUs"),
    (["-p", "80:80"], "below 1024"),
])
def test_refusals_as_the_cli_shows_them(proxied, args, words, docker_cli):
    user, img, listen = proxied
    r = docker(listen, "run", "--rm", *args, img, "true", check=False, as_user=user, cli=docker_cli)
    assert r.returncode != 0 and "Error response from daemon: berth:" in r.stderr and words in r.stderr, r.stderr


def test_a_missing_bind_source_is_made_only_where_its_user_may(proxied, harness, docker_cli):
    """dockerd would make it as root; berth makes it as the user, or refuses."""
    _, img, listen = proxied
    missing = os.path.join(harness.root, "never-made", "deeper")
    r = docker(listen, "run", "--rm", "-v", f"{missing}:/x", img, "true", check=False, cli=docker_cli)
    assert r.returncode != 0 and "does not exist and you may not create" in r.stderr
    assert not os.path.exists(os.path.dirname(missing))


def raw(listen, request):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(listen)
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def chunked(*parts):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def post(target, body, extra=b""):
    return (b"POST " + target + b" HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


@pytest.mark.parametrize("request_bytes, words", [
    (b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b'{"Image": "x", "HostConfig"', b': {"Privileged": true}}'),
     "--privileged"),
    (b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
    (post(b"/containers/create", b'{"Image": "x", "hostconfig": {"privileged": true}}'), "--privileged"),
    (post(b"/containers/create", b'{"Image": "x", "HostConfig": {"PRIVILEGED": true}}'), "--privileged"),
    (post(b"/containers/create", b'{"Image": "x", "HostConfig": {"Privileged": false, "privileged": true}}'),
     "appears twice"),
    (post(b"/containers/create", b'{"Image": "x", "Labels": {"a": "' + b"x" * (1 << 20) + b'"}}'), "over"),
    (post(b"/v1.41//containers/create", b'{"Image": "x"}'), "the request path"),
    (post(b"/containers/../containers/create", b'{"Image": "x"}'), "the request path"),
    (post(b"/plugins/pull?remote=evil", b"[]"), "the plugins API"),
    # found by attacking the proxy: a version dockerd routes, HostConfig at the top, a form body
    (post(b"/v1.41.0/containers/create", b'{"Image": "x", "HostConfig": {"Privileged": true}}'), "API version"),
    (post(b"/containers/create", b'{"Image": "x", "Privileged": true, "Binds": ["/:/host"]}'),
     "outside HostConfig"),
    (b"POST /build HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-www-form-urlencoded\r\n"
     b"Content-Length: 16\r\n\r\nnetworkmode=host", "form-encoded"),
    (post(b"/containers/net/update", b'{"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]}'),
     "devices other than GPUs"),
    (post(b"/containers/net/checkpoints", b'{"CheckpointID": "x"}'), "the Docker API the docker CLI uses"),
])
def test_raw_http_that_tries_to_get_past(proxied, request_bytes, words):
    _, _, listen = proxied
    answer = raw(listen, request_bytes)
    status = "400" if words == "400" else "403"
    assert answer.startswith(f"HTTP/1.1 {status}") and words in answer, answer[:300]


def test_a_head_h11_will_not_read_is_answered_400_and_logged_without_a_traceback(proxied, harness):
    _, _, listen = proxied
    for request in (b"GET /_ping HTTP/1.1\r\n\r\n", b"GET /_ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                    b"\r\n" * 1000 + b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"):
        answer = raw(listen, request)
        assert answer.startswith("HTTP/1.1 400") and "berth: a request that is not HTTP/1.1" in answer, answer
    with open(f"{harness.root}/log/proxy.log") as f:
        assert "Traceback" not in f.read()


def test_a_one_part_bind_is_an_anonymous_volume_as_dockerd_makes_it(proxied):
    """compose 1.29 sends `-v /data` as HostConfig.Binds ["/data"]: a volume, no host path."""
    user, img, listen = proxied
    body = json.dumps({"Image": img, "Cmd": ["true"], "HostConfig": {"Binds": ["/data"]}}).encode()
    answer = raw(listen, post(b"/v1.41/containers/create?name=px-anon", body, b"Connection: close\r\n"))
    try:
        assert answer.startswith("HTTP/1.1 201"), answer
        shown = raw(listen, b"GET /v1.41/containers/px-anon/json HTTP/1.0\r\nHost: d\r\n\r\n")  # not chunked
        info = json.loads(shown.split("\r\n\r\n", 1)[1])
        assert [(m["Type"], m["Destination"]) for m in info["Mounts"]] == [("volume", "/data")]
        assert info["HostConfig"]["Binds"] == ["/data"]
    finally:
        raw(listen, b"DELETE /v1.41/containers/px-anon?v=1 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")


def test_a_streamed_body_framed_by_its_length_goes_through_whole(proxied):
    """The docker CLI sends its uploads chunked; a client may give a Content-Length instead."""
    import io
    import tarfile
    _, img, listen = proxied
    payload = os.urandom(3 << 20)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("sized")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    docker(listen, "run", "-d", "--name", "px-sized", img, "sleep", "600", cli=DEBIAN_CLI)
    try:
        answer = raw(listen, b"PUT /v1.41/containers/px-sized/archive?path=/tmp HTTP/1.1\r\nHost: docker\r\n"
                             b"Content-Type: application/x-tar\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(tar.getvalue()) + tar.getvalue())
        assert answer.startswith("HTTP/1.1 200"), answer[:300]
        r = subprocess.run([DEBIAN_CLI, "-H", f"unix://{listen}", "exec", "px-sized", "cat", "/tmp/sized"],
                           capture_output=True, timeout=60)
        assert r.stdout == payload
    finally:
        docker(listen, "rm", "-f", "px-sized", check=False, cli=DEBIAN_CLI)


def small_tar(name, data):
    import io
    import tarfile
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_request_smuggled_behind_a_relayed_body_never_reaches_dockerd(proxied):
    """An upload's body goes to dockerd as the client sent it, unparsed. Sent
    to dockerd's own socket, these bytes run the second request (dockerd reads
    on after the body's end); through berth, dockerd is told the connection
    carries one request, and the smuggled one never runs."""
    _, img, listen = proxied
    docker(listen, "run", "-d", "--name", "px-carrier", img, "sleep", "600", cli=DEBIAN_CLI)
    tar = small_tar("carried", b"hello")
    try:
        # found by attacking the change: a Connection header that says upgrade, where llhttp sees none
        for n, (framing, body) in enumerate([(b"Transfer-Encoding: chunked", chunked(tar)),
                                             (b"Content-Length: %d" % len(tar), tar),
                                             (b"Connection: Upgrade\r\nContent-Length: %d" % len(tar), tar),
                                             (b"Connection: keep-alive, x-noupgrade\r\nTransfer-Encoding: chunked",
                                              chunked(tar))]):
            smuggled = post(b"/containers/create?name=px-smuggled%d" % n,
                            b'{"Image": "%s", "HostConfig": {"UsernsMode": "host", "Privileged": true}}'
                            % img.encode())  # what dockerd runs, and berth refuses
            answer = raw(listen, b"PUT /containers/px-carrier/archive?path=/tmp HTTP/1.1\r\nHost: docker\r\n"
                                 b"Content-Type: application/x-tar\r\n" + framing + b"\r\n\r\n" + body + smuggled)
            assert answer.startswith("HTTP/1.1 200") and answer.count("HTTP/1.1 ") == 1, answer[:300]
        names = docker(listen, "ps", "-a", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
        assert not [name for name in names if name.startswith("px-smuggled")]
        assert docker(listen, "exec", "px-carrier", "cat", "/tmp/carried", cli=DEBIAN_CLI).stdout == "hello"
    finally:
        docker(listen, "rm", "-f", "px-carrier", *[f"px-smuggled{n}" for n in range(4)], check=False, cli=DEBIAN_CLI)


def test_a_request_pipelined_behind_a_json_body_streams_its_upload_whole(proxied):
    """llhttp reads such a request's body itself: the proxy frames it anew."""
    _, img, listen = proxied
    docker(listen, "run", "-d", "--name", "px-piped", img, "sleep", "600", cli=DEBIAN_CLI)
    payload = os.urandom(1 << 20)
    tar = small_tar("piped", payload)
    try:
        answer = raw(listen, post(b"/volumes/create", b'{"Name": "px-piped-vol"}')
                     + b"PUT /containers/px-piped/archive?path=/tmp HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
                       b"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(tar))
        # the first answer keeps the connection open (dockerd is told otherwise: one request a connection)
        assert answer.startswith("HTTP/1.1 201") and "HTTP/1.1 200" in answer, answer[:600]
        assert answer.lower().count("connection: close") == 1
        r = subprocess.run([DEBIAN_CLI, "-H", f"unix://{listen}", "exec", "px-piped", "cat", "/tmp/piped"],
                           capture_output=True, timeout=60)
        assert r.stdout == payload
    finally:
        docker(listen, "rm", "-f", "px-piped", check=False, cli=DEBIAN_CLI)
        docker(listen, "volume", "rm", "px-piped-vol", check=False, cli=DEBIAN_CLI)


def open_connections(harness, user):
    from berth.proxy import control as proxyctl
    return proxyctl.stats(f"{harness.root}/run")[user]["connections"]


def killed_midway(harness, user, argv, after=0.1):
    """Run a docker command, kill it once it is into its request, and give
    the proxy 10 s to let go of its connections."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not open_connections(harness, user) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(after)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while open_connections(harness, user) and time.monotonic() < deadline:
        time.sleep(0.1)
    return open_connections(harness, user)


def test_a_client_gone_mid_answer_or_mid_upload_leaves_no_connection_behind(proxied, harness, tmp_path):
    """As with dockerd's own socket: dockerd stops what it was answering, and
    the proxy's connections, which each user has 256 of, are given back."""
    user, img, listen = proxied
    # docker run -d asks dockerd to wait for the container's exit, and leaves
    docker(listen, "run", "-d", "--name", "px-cut", img, "sleep", "600", cli=DEBIAN_CLI)
    try:
        deadline = time.monotonic() + 10
        while open_connections(harness, user) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert open_connections(harness, user) == 0
        assert killed_midway(harness, user, [DEBIAN_CLI, "-H", f"unix://{listen}", "logs", "-f", "px-cut"]) == 0
        # a body dockerd never reads (it waits for the container first), and the client gone: at once,
        # after ending its side first, or while bytes it sent after a head are held back
        for request, half_close in [
                (b"POST /containers/px-cut/wait HTTP/1.1\r\nHost: d\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, False),
                (b"POST /containers/px-cut/wait HTTP/1.1\r\nHost: d\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, True),
                (b"GET /events HTTP/1.1\r\nHost: d\r\n\r\nX", False)]:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(listen)
                s.sendall(request)
                time.sleep(0.2)
                if half_close:
                    s.shutdown(socket.SHUT_WR)
                    time.sleep(0.2)
        deadline = time.monotonic() + 10
        while open_connections(harness, user) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert open_connections(harness, user) == 0
        blob = tmp_path / "blob"
        with open(blob, "wb") as f:
            for _ in range(256):
                f.write(os.urandom(1 << 20))
        assert killed_midway(harness, user, [DEBIAN_CLI, "-H", f"unix://{listen}", "cp", str(blob),
                                             "px-cut:/blob"]) == 0
        assert docker(listen, "exec", "px-cut", "true", cli=DEBIAN_CLI).returncode == 0  # dockerd and the proxy go on
    finally:
        docker(listen, "rm", "-f", "px-cut", check=False, cli=DEBIAN_CLI)


def test_a_legacy_build_streams_its_context_through(proxied, tmp_path, docker_cli):
    """Debian's CLI (20.10) sends cgroupparent= and ulimits=null on every legacy build."""
    _, img, listen = proxied
    (tmp_path / "Dockerfile").write_text(f"FROM {img}\nCOPY blob /blob\nRUN wc -c /blob > /size\n")
    (tmp_path / "blob").write_bytes(os.urandom(2 << 20))
    r = subprocess.run([docker_cli, "-H", f"unix://{listen}", "build", "-q", "-t", "px-built", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert r.returncode == 0, r.stderr
    assert docker(listen, "run", "--rm", "px-built", "cat", "/size", cli=docker_cli).stdout.split()[0] == str(2 << 20)
    r = subprocess.run([docker_cli, "-H", f"unix://{listen}", "build", "--network=host", "-t", "px-host",
                        str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert r.returncode != 0 and "berth: a build with --network=host" in r.stderr, r.stderr


def test_run_output_is_never_lost_over_many_runs(proxied):
    """A connection task the loop held only weakly was once collected mid-stream (~1 run in 13)."""
    _, img, listen = proxied
    for i in range(40):
        r = docker(listen, "run", "--rm", img, "echo", f"round-{i}", cli=DEBIAN_CLI)
        assert r.stdout.strip() == f"round-{i}", (i, r.stdout, r.stderr)


# --- the proxy as berth runs it: sockets, supervision, health -------------------

def _proxy_pid(harness):
    from berth.proxy import control as proxyctl
    info = proxyctl.ping(f"{harness.root}/run")
    return info and info["pid"]


def _kill_proxy(harness):
    import signal
    import time

    from berth.core import proc
    pid = _proxy_pid(harness)
    assert pid, "no policy proxy answers"
    start = proc.stat(pid).start_ticks
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not proc.alive(pid, start):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"the proxy {pid} survived SIGKILL")


def test_the_users_socket_is_the_proxys_and_dockerds_own_is_roots_alone(proxied, harness):
    import json
    import stat

    user, _, listen = proxied
    st = os.stat(listen)
    assert stat.S_ISSOCK(st.st_mode) and st.st_uid == pwd.getpwnam(user).pw_uid and st.st_gid == 0
    assert stat.S_IMODE(st.st_mode) == 0o600
    engine_dir = f"{harness.root}/run/{user}/d"
    assert os.stat(engine_dir).st_uid == 0 and stat.S_IMODE(os.stat(engine_dir).st_mode) == 0o700
    with open(f"{harness.root}/run/{user}/daemon.json") as f:
        assert json.load(f)["hosts"] == [f"unix://{engine_dir}/docker.sock"]  # dockerd serves nothing else
    r = docker(f"{engine_dir}/docker.sock", "ps", check=False, as_user=user, cli=DEBIAN_CLI)
    assert r.returncode != 0 and "permission denied" in r.stderr.lower(), r.stderr
    # What the user gets through the proxy is the same daemon as root sees behind it.
    assert docker(listen, "info", "--format", "{{.ID}}", as_user=user, cli=DEBIAN_CLI).stdout == \
        docker(f"{engine_dir}/docker.sock", "info", "--format", "{{.ID}}", cli=DEBIAN_CLI).stdout


def test_a_connection_from_another_user_is_refused_even_through_an_opened_socket(proxied, harness):
    user, _, listen = proxied
    other = harness.add_user()
    run_dir = os.path.dirname(listen)
    mode = os.stat(run_dir).st_mode  # with the ACL's mask in its group bits: restored as it was
    # As if someone had opened both up: the proxy still knows whose socket it is.
    os.chmod(run_dir, 0o711)
    os.chmod(listen, 0o666)
    try:
        r = docker(listen, "ps", check=False, as_user=other, cli=DEBIAN_CLI)
    finally:
        os.chmod(listen, 0o600)
        os.chmod(run_dir, mode)
    assert r.returncode != 0 and "berth: a connection from another user" in r.stderr, r.stderr


def test_a_name_the_cli_escapes_gets_dockerds_own_answer(proxied, docker_cli):
    """The CLI sends /containers/no%20such%20name/json, then the same for an
    image, network, volume and plugin: dockerd's "No such object" at the end."""
    user, _, listen = proxied
    r = docker(listen, "inspect", "no such name", check=False, as_user=user, cli=docker_cli)
    assert r.returncode != 0 and "No such object: no such name" in r.stderr, r.stderr


def test_a_proxy_killed_refuses_and_the_next_up_restores_it_with_containers_kept(proxied, harness):
    from berth.login import warm
    user, img, listen = proxied
    docker(listen, "run", "-d", "--name", "px-survivor", img, "sleep", "600", as_user=user, cli=DEBIAN_CLI)
    started = docker(listen, "inspect", "-f", "{{.State.StartedAt}}", "px-survivor", cli=DEBIAN_CLI).stdout
    try:
        old = _kill_proxy(harness)
        r = docker(listen, "ps", check=False, as_user=user, cli=DEBIAN_CLI)
        assert r.returncode != 0 and "Cannot connect" in r.stderr, r.stderr  # refused, never dockerd's socket
        assert not warm.is_up(f"{harness.root}/run", user)  # so a login takes the slow path
        doctor = harness.berth("doctor", check=False).stdout
        assert any("policy proxy" in line and "not running" in line and user in line
                   for line in doctor.splitlines()), doctor
        harness.berth("up", user)
        assert _proxy_pid(harness) not in (None, old)
        assert warm.is_up(f"{harness.root}/run", user)
        names = docker(listen, "ps", "--format", "{{.Names}}", as_user=user, cli=DEBIAN_CLI).stdout.split()
        assert "px-survivor" in names
        assert docker(listen, "inspect", "-f", "{{.State.StartedAt}}", "px-survivor", cli=DEBIAN_CLI).stdout == started
    finally:
        docker(listen, "rm", "-f", "px-survivor", check=False, cli=DEBIAN_CLI)


def test_the_reaper_pass_restarts_a_dead_proxy(proxied, harness):
    user, _, listen = proxied
    _kill_proxy(harness)
    out = harness.berth("reap").stdout
    assert "policy proxy repaired" in out, out
    assert docker(listen, "ps", "-q", as_user=user, cli=DEBIAN_CLI).returncode == 0


def test_status_and_doctor_show_the_proxy(proxied, harness):
    import json
    user, _, _ = proxied
    doc = json.loads(harness.berth("status", "--json").stdout)
    assert doc["proxy"]["state"] == "up" and user in doc["proxy"]["users"] and doc["proxy"]["memory_bytes"] > 0
    table = harness.berth("status").stdout
    assert f"policy proxy: pid {doc['proxy']['pid']}, serving" in table, table
    doctor = harness.berth("doctor", check=False).stdout
    assert any(line.startswith("ok") and "policy proxy" in line for line in doctor.splitlines()), doctor


def test_a_user_sees_their_own_refusals_and_nobody_elses(proxied, harness):
    """When a client hides berth's message (the h2c upgrade does), `berth
    refusals` shows it: to the user, through their own socket; to root,
    through the proxy's control socket; to nobody else."""
    import json
    user, img, listen = proxied
    other = harness.add_user()
    harness.berth("up", other)
    try:
        r = docker(listen, "run", "--rm", "--name", "px-secret-name", "--privileged", img, "true",
                   check=False, as_user=user, cli=DEBIAN_CLI)
        assert "berth: --privileged" in r.stderr, r.stderr

        def refusals(as_user, *args):
            return subprocess.run(["runuser", "-u", as_user, "--", *harness.user_berth(), "refusals", *args],
                                  capture_output=True, text=True, timeout=60)
        mine = refusals(user, "--json")
        assert mine.returncode == 0, mine.stderr
        kept = [e for e in json.loads(mine.stdout)["refusals"] if e["what"] == "--privileged"][-1]
        assert kept["user"] == user and kept["method"] == "POST" and kept["status"] == 403
        assert kept["path"].endswith("/containers/create") and "px-secret-name" not in mine.stdout
        text = refusals(user).stdout
        assert f"POST {kept['path']}  (403)" in text and "refused: --privileged" in text
        assert "instead: run without it" in text

        theirs = refusals(other)
        assert theirs.returncode == 0 and theirs.stdout.startswith("no refusals kept"), theirs.stdout + theirs.stderr
        peek = refusals(other, user)
        assert peek.returncode == 1 and f"only root can see {user}'s refusals" in peek.stderr
        assert user not in peek.stdout and "privileged" not in peek.stdout

        assert "refused: --privileged" in harness.berth("refusals", user).stdout
        everyone = json.loads(harness.berth("refusals", "--json").stdout)["refusals"]
        assert {e["user"] for e in everyone} == {user}
    finally:
        harness.berth("down", other)
    gone = harness.berth("refusals", other, check=False)
    assert gone.returncode == 1 and f"berth: the policy proxy does not serve {other}:" in gone.stderr, gone.stderr


def test_down_stops_serving_the_user_and_up_serves_them_again(proxied, harness):
    from berth.proxy import control as proxyctl
    user, _, listen = proxied
    harness.berth("down", user)
    assert not os.path.exists(listen)
    assert not os.path.exists(f"{harness.root}/run/{user}/proxy.conf")
    assert user not in proxyctl.stats(f"{harness.root}/run")
    harness.berth("up", user)
    assert docker(listen, "ps", "-q", as_user=user, cli=DEBIAN_CLI).returncode == 0


def test_docker_cp_through_a_bind_mount_works_as_the_user(proxied, harness, docker_cli):
    """dockerd would extract and archive as root on the host, through the
    container's binds; berth copies a stopped one's bind paths as the user
    instead (tests/integration/test_copy_binds*.py: the rest)."""
    user, img, listen = proxied
    bound = os.path.join(harness.root, "home", user)
    docker(listen, "create", "--name", "px-bound", "-v", f"{bound}:/h", img, "true", as_user=user, cli=docker_cli)
    payload = os.path.join(bound, "payload")
    try:
        with open(payload, "w") as f:
            f.write("x")
        os.chown(payload, pwd.getpwnam(user).pw_uid, -1)
        docker(listen, "cp", payload, "px-bound:/h/f", as_user=user, cli=docker_cli)
        assert os.stat(os.path.join(bound, "f")).st_uid == pwd.getpwnam(user).pw_uid
        docker(listen, "cp", "px-bound:/h/f", os.path.join(bound, "out"), as_user=user, cli=docker_cli)
        assert open(os.path.join(bound, "out")).read() == "x"
    finally:
        docker(listen, "rm", "-f", "px-bound", check=False, cli=docker_cli)
        for name in ("payload", "f", "out"):
            if os.path.exists(os.path.join(bound, name)):
                os.unlink(os.path.join(bound, name))


def test_everyday_cli_commands_pass_the_allow_list(proxied, docker_cli):
    """The routes berth lets through are enough for what users run every day."""
    user, img, listen = proxied

    def ok(*args):
        return docker(listen, *args, as_user=user, cli=docker_cli).stdout

    ok("version")
    ok("info")
    ok("images")
    ok("system", "df")
    ok("volume", "create", "px-vol")
    assert "px-vol" in ok("volume", "ls", "-q")
    ok("network", "create", "px-net")
    ok("network", "inspect", "px-net")
    ok("run", "-d", "--name", "px-daily", "--network", "px-net", "-v", "px-vol:/data", img, "sleep", "600")
    try:
        for args in (["top", "px-daily"], ["logs", "px-daily"], ["stats", "--no-stream", "px-daily"],
                     ["diff", "px-daily"], ["pause", "px-daily"], ["unpause", "px-daily"],
                     ["rename", "px-daily", "px-daily2"], ["update", "--memory", "256m", "--memory-swap", "512m",
                                                           "px-daily2"],
                     ["commit", "px-daily2", "px-snap:1"], ["tag", "px-snap:1", "px-snap:2"],
                     ["history", "px-snap:2"], ["image", "inspect", "px-snap:2"], ["restart", "-t", "0", "px-daily2"],
                     ["kill", "px-daily2"], ["wait", "px-daily2"], ["rm", "px-daily2"],
                     ["rmi", "px-snap:1", "px-snap:2"],
                     ["network", "rm", "px-net"], ["volume", "rm", "px-vol"], ["container", "prune", "-f"],
                     ["events", "--since", "1m", "--until", "0s"]):
            ok(*args)
    finally:
        docker(listen, "rm", "-f", "px-daily", "px-daily2", check=False, cli=docker_cli)
        docker(listen, "network", "rm", "px-net", check=False, cli=docker_cli)
        docker(listen, "volume", "rm", "px-vol", check=False, cli=docker_cli)


def test_a_refused_head_is_answered_with_headers_alone(proxied):
    """A HEAD the policy refuses: the 403's head, no body after it (h11 would raise on one)."""
    _, _, listen = proxied
    answer = raw(listen, b"HEAD /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n")
    head, _, rest = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 403") and "content-length:" in head.lower() and rest == ""


def test_an_empty_form_body_and_ignored_create_keys_get_dockerds_own_answers(proxied):
    """curl -d '' sends an empty form body; docker-java, dockerode and testcontainers put keys
    dockerd ignores at the top of a create body (PortSpecs, name, platform)."""
    _, img, listen = proxied
    answer = raw(listen, b"POST /v1.41/containers/no-such/stop HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith("HTTP/1.1 404") and "No such container" in answer
    body = ('{"Image": "%s", "Cmd": ["true"], "PortSpecs": null, "name": "px-keys", "platform": "linux", '
            '"HostConfig": {}}' % img).encode()
    answer = raw(listen, post(b"/v1.41/containers/create?name=px-keys", body, b"Connection: close\r\n"))
    assert answer.startswith("HTTP/1.1 201"), answer
    assert docker(listen, "rm", "px-keys", cli=DEBIAN_CLI).returncode == 0


def test_encoded_image_names_get_dockerds_own_answers(proxied):
    """docker-py and docker-java percent-encode image references; dockerd decodes them."""
    _, img, listen = proxied
    answer = raw(listen, b"GET /v1.41/images/" + img.replace(":", "%3A").encode() + b"/json HTTP/1.1\r\n"
                         b"Host: docker\r\nConnection: close\r\n\r\n")
    assert answer.startswith("HTTP/1.1 200"), answer[:300]
    import docker as sdk
    client = sdk.DockerClient(base_url=f"unix://{listen}")
    try:
        image = client.images.get(img)
        assert client.images.get(image.id).id == image.id
        assert client.containers.run(img, ["echo", "sdk"], remove=True) == b"sdk\n"
    finally:
        client.close()


def test_expect_100_continue_on_a_body_the_policy_reads_is_answered_at_once(proxied):
    """curl sends Expect: 100-continue and waits for the 100 before the body."""
    _, img, listen = proxied
    body = ('{"Image": "%s", "Cmd": ["true"]}' % img).encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(listen)
        s.sendall(b"POST /v1.41/containers/create?name=px-expect HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n")
        t0 = time.monotonic()
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100") and time.monotonic() - t0 < 0.5, first
        s.sendall(body)
        answer = first
        while data := s.recv(65536):
            answer += data
    assert b"HTTP/1.1 201" in answer, answer
    assert docker(listen, "rm", "px-expect", cli=DEBIAN_CLI).returncode == 0


def test_http_1_0_without_host_gets_dockerds_answer(proxied):
    """A health check or a shell script: `printf 'GET /_ping HTTP/1.0\\r\\n\\r\\n' | nc -U docker.sock`."""
    _, _, listen = proxied
    answer = raw(listen, b"GET /_ping HTTP/1.0\r\n\r\n")
    assert answer.startswith("HTTP/1.") and " 200 " in answer.split("\r\n")[0] and answer.endswith("OK"), answer
