"""Network isolation against a user who tries, held by the kernel's rules
(not by the policy proxy): two users on real daemons, host shells, a
network made behind the proxy's back, and forged packets sent from a
namespace this test puts on a user's bridge."""

import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import DEBIAN_CLI
from netprobe import Listener, Namespace, assert_dropped, end, hosts

PORT = 8080
BUSYBOX = "/bin/busybox"


@pytest.fixture(scope="module")
def pair(harness):
    """Alice and bob up, each with a web server on :8080 in their net container."""
    users = [harness.add_user(), harness.add_user()]
    info = {}
    for user in users:
        harness.berth("up", user)
        img = harness.import_busybox(user)
        # httpd, PID 1, ignores SIGTERM: a down stops it after 1 s, not dockerd's default 10
        harness.docker(user, "run", "-d", "--stop-timeout", "1", "--name", "web", "--net=container:net", img, "sh",
                       "-c", f"echo page-of-{user} > /www/index.html && exec httpd -f -p {PORT} -h /www",
                       cli=DEBIAN_CLI)
        row = json.loads(harness.berth("status", user, "--json").stdout)["users"][0]
        info[user] = {"ip": row["net_ip"], "block": row["block"], "uid": row["uid"], "img": img,
                      "bridge": row["bridge"]}
        for _ in range(50):  # httpd takes a moment to listen
            if fetch(row["net_ip"]) is not None:
                break
            time.sleep(0.1)
    yield users, info
    for user in users:
        harness.docker(user, "rm", "-f", "web", check=False, cli=DEBIAN_CLI)


def fetch(ip, as_user=None):
    # busybox's own wget timeout option crashes when built static: timeout(1) bounds it
    cmd = ["timeout", "4", BUSYBOX, "wget", "-q", "-O", "-", f"http://{ip}:{PORT}/"]
    if as_user:
        cmd = ["runuser", "-u", as_user, "--", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return r.stdout.strip() if r.returncode == 0 else None


def shell_gets_nowhere(user, ip):
    """`user`'s fetch of ip:PORT from their shell is dropped (an httpd listens there: a SYN that
    reached it would be answered at once). netprobe.assert_dropped says how, in 1.5 s, not 4."""
    client = subprocess.Popen(["runuser", "-u", user, "--", BUSYBOX, "wget", "-q", "-O", "-", f"http://{ip}:{PORT}/"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert_dropped(client, ip, PORT)
    return True


def test_host_users_stay_out_but_the_owner_and_root_get_in(harness, pair):
    (alice, bob), info = pair
    ip = info[alice]["ip"]
    assert fetch(ip) == f"page-of-{alice}"                 # root (and docker-proxy for -p, which is root's)
    assert fetch(ip, as_user=alice) == f"page-of-{alice}"  # alice from her own shell
    assert shell_gets_nowhere(bob, ip)                     # bob from his shell
    assert fetch(info[bob]["ip"], as_user=bob) == f"page-of-{bob}"


def test_a_network_made_behind_the_proxys_back_still_cannot_reach_another_user(harness, pair):
    """dockerd itself (root, or trusted mode) may make any network; the kernel's rules are by destination."""
    (alice, bob), info = pair
    engine = f"unix://{harness.root}/run/{alice}/d/docker.sock"
    pool = ipaddress.ip_network(harness.pool)
    outside = str(list(pool.subnets(new_prefix=24))[-1])  # in the pool, in no one's block
    subprocess.run([DEBIAN_CLI, "-H", engine, "network", "create", "--subnet", outside, "rogue"], check=True,
                   capture_output=True)
    try:
        assert container_gets_nowhere(engine, info[alice]["img"], info[bob]["ip"], "--network", "rogue")
        # and from alice's own block, as before
        assert container_gets_nowhere(f"unix://{harness.sock(alice)}", info[alice]["img"], info[bob]["ip"])
    finally:
        subprocess.run([DEBIAN_CLI, "-H", engine, "network", "rm", "rogue"], capture_output=True)


def container_gets_nowhere(engine, img, ip, *run_args):
    """A container's fetch of ip:PORT (run on `engine`, a docker -H address) is dropped: its SYN,
    seen in the container's own network namespace, stays unanswered (netprobe.assert_dropped)."""
    client = subprocess.Popen([DEBIAN_CLI, "-H", engine, "run", "--rm", "--name", "probe", *run_args, img,
                               "wget", "-q", "-O", "-", f"http://{ip}:{PORT}/"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, pid = time.monotonic() + 30, 0
        while not pid:
            r = subprocess.run([DEBIAN_CLI, "-H", engine, "inspect", "-f", "{{.State.Pid}}", "probe"],
                               capture_output=True, text=True)
            pid = int(r.stdout.strip() or 0) if r.returncode == 0 else 0
            if not pid:
                assert client.poll() is None and time.monotonic() < deadline, end(client)
                time.sleep(0.05)
        assert_dropped(client, ip, PORT, netns=f"/proc/{pid}/ns/net")
    finally:
        end(client)
        subprocess.run([DEBIAN_CLI, "-H", engine, "rm", "-f", "probe"], capture_output=True)
    return True


# --- forged sources -------------------------------------------------------------------

SEND = """
import socket, struct, sys
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # our own IP header
s.sendto(ip + udp, (dst, 0))
"""


@pytest.fixture
def listener_and_forger(harness, pair):
    (alice, bob), info = pair
    bob_ip, prefix, bob_gw = hosts(info[bob]["block"], 2)
    alice_ip, _, alice_gw = hosts(info[alice]["block"], 2)
    made = []
    try:
        listener = Namespace(f"bt{harness.tag}l", info[bob]["bridge"], bob_ip, prefix, bob_gw)
        made.append(listener)
        forger = Namespace(f"bt{harness.tag}f", info[alice]["bridge"], alice_ip, prefix, alice_gw)
        made.append(forger)
        proc = subprocess.Popen(["ip", "netns", "exec", listener.name, sys.executable, "-c",
                                 "import socket, sys\n"
                                 "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                 "s.bind(('0.0.0.0', 9999)); s.settimeout(30)\n"
                                 "print('ready', flush=True)\n"
                                 "while True:\n"
                                 "    data, peer = s.recvfrom(100)\n"
                                 "    print(data.decode(), peer[0], flush=True)\n"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        yield forger, alice_ip, bob_ip, info, proc
        proc.kill()
        proc.wait()
    finally:
        for ns in made:
            ns.close()


def _received(proc, until, wait=5.0, grace=0.3):
    """The listener's lines, read until one starts with `until` (and `grace` s more), or for `wait` s."""
    os.set_blocking(proc.stdout.fileno(), False)
    deadline, lines = time.monotonic() + wait, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line.strip())
            if line.startswith(until):
                deadline = min(deadline, time.monotonic() + grace)
        else:
            time.sleep(0.02)
    return lines


def _from_root(target, word):
    """A datagram root sends bob's listener, delivered: sent after forged ones, it arrives after
    any of them that would (one kernel, a few hops, the forger's process already gone)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(word.encode(), (target, 9999))


def test_forged_sources_from_another_users_bridge_are_not_delivered(harness, pair, listener_and_forger):
    forger, forger_ip, target, info, listener = listener_and_forger
    (alice, bob), _ = pair
    # from alice's bridge: posing as bob's own net container, as an address in no block, and as itself
    for src, word in ((info[bob]["ip"], "as-bob"), ("198.51.100.7", "as-outsider"), (forger_ip, "as-alice")):
        forger.run(sys.executable, "-c", SEND, src, target, "9999", word)
    # root on the host reaches bob's listener: it works, and what was forged before it came first
    _from_root(target, "from-root")
    got = _received(listener, "from-root")
    assert any(line.startswith("from-root") for line in got), got
    assert not any(line.startswith(("as-bob", "as-outsider", "as-alice")) for line in got), got
    # The control: without the anti-spoofing rules, posing as bob gets through
    # (bob's own block accepts its own addresses); berth up puts them back.
    subprocess.run(["iptables-legacy", "-t", "raw", "-F", f"{harness.chain_prefix}-PREROUTING"], check=True)
    forger.run(sys.executable, "-c", SEND, info[bob]["ip"], target, "9999", "unchecked-as-bob")
    assert any(line.startswith("unchecked-as-bob") for line in _received(listener, "unchecked-as-bob"))
    for user in (alice, bob):
        harness.berth("up", user)
    forger.run(sys.executable, "-c", SEND, info[bob]["ip"], target, "9999", "again-as-bob")
    _from_root(target, "root-again")
    got = _received(listener, "root-again")
    assert any(line.startswith("root-again") for line in got), got
    assert not any(line.startswith("again-as-bob") for line in got), got


def test_rules_come_back_after_a_flush_of_every_berth_chain(harness, pair):
    (alice, bob), info = pair
    before = sorted(harness.rules_mentioning(f"berth:{alice}"))
    assert any("rpfilter" in line for line in before) and any("owner" in line for line in before)
    # What `iptables -F && iptables -X` does to berth: no jumps, no chains.
    from berth.net import firewall, rules
    cfg = harness.cfg()
    ch = rules.chains(cfg)
    for jump in ch.jumps():
        tool = "ip6tables-legacy" if jump.ip6 else "iptables-legacy"
        subprocess.run([tool, "-t", jump.table, "-D", jump.chain, "-m", "comment", "--comment", "berth",
                        "-j", jump.target], check=True)
        subprocess.run([tool, "-t", jump.table, "-F", jump.target], check=True)
        subprocess.run([tool, "-t", jump.table, "-X", jump.target], check=True)
    assert harness.rules_mentioning(harness.chain_prefix) == []
    assert fetch(info[alice]["ip"], as_user=bob) == f"page-of-{alice}"  # open while the rules are gone
    out = harness.berth("reap").stdout
    assert "firewall rules were missing and are back" in out, out
    assert sorted(harness.rules_mentioning(f"berth:{alice}")) == before
    assert firewall.Firewall(cfg).jumps_in_place()
    # read back exactly as planned: the next pass finds nothing to put back
    assert "were missing" not in harness.berth("reap").stdout
    assert shell_gets_nowhere(bob, info[alice]["ip"])
    # only the jumps gone (a flush of the built-in chains): back too
    for jump in ch.jumps():
        subprocess.run(["ip6tables-legacy" if jump.ip6 else "iptables-legacy", "-t", jump.table, "-D", jump.chain,
                        "-m", "comment", "--comment", "berth", "-j", jump.target], check=True)
    assert not firewall.Firewall(cfg).jumps_in_place()
    harness.berth("reap")
    assert firewall.Firewall(cfg).jumps_in_place()
    assert shell_gets_nowhere(bob, info[alice]["ip"])


# --- no hijack, no exhaustion -------------------------------------------------------------

def _engine(harness, user, *args, check=True):
    return subprocess.run([DEBIAN_CLI, "-H", f"unix://{harness.root}/run/{user}/d/docker.sock", *args],
                          capture_output=True, text=True, timeout=60, check=check)


def _addresses_in(block):
    from berth.net import bridge
    return [(link, a) for link, a in bridge.addresses()
            if ipaddress.ip_interface(a).network.overlaps(ipaddress.ip_network(block))]


def test_a_users_daemon_cannot_take_another_users_addresses_even_across_a_restart(harness, pair):
    """alice's daemon is made (behind the proxy's back) to put bob's net IP on a bridge of its own and
    serve a fake page there; bob's daemon restarts, as a reap and a login do: bob's IP is bob's again."""
    (alice, bob), info = pair
    bob_net = ipaddress.ip_address(info[bob]["ip"])
    small = ipaddress.ip_network(f"{bob_net}/28", strict=False)  # more specific than bob's bridge half
    _engine(harness, alice, "network", "create", "--subnet", str(small), "--gateway", str(small.broadcast_address - 1),
            "hijack")
    try:
        _engine(harness, alice, "run", "-d", "--name", "fake", "--network", "hijack", "--ip", str(bob_net),
                info[alice]["img"], "sh", "-c",
                f"echo FAKE > /www/index.html && exec httpd -f -p {PORT} -h /www")
        harness.berth("down", bob)
        harness.berth("up", bob)
        harness.docker(bob, "start", "web", cli=DEBIAN_CLI)
        assert [link for link, _ in _addresses_in(info[bob]["block"])] == [info[bob]["bridge"]]
        for _ in range(50):
            page = fetch(info[bob]["ip"])
            if page is not None:
                break
            time.sleep(0.1)
        assert page == f"page-of-{bob}"
        # what is put back behind berth's back, the reaper pass takes off again
        link = next(n["Options"].get("com.docker.network.bridge.name") or "br-" + n["Id"][:12]
                    for n in json.loads(_engine(harness, alice, "network", "inspect", "hijack").stdout))
        subprocess.run(["ip", "addr", "add", f"{small.broadcast_address - 1}/{small.prefixlen}", "dev", link],
                       check=True)
        out = harness.berth("reap").stdout
        assert f"lay in {bob}'s block; removed" in out, out
        assert fetch(info[bob]["ip"]) == f"page-of-{bob}"
    finally:
        _engine(harness, alice, "rm", "-f", "fake", check=False)
        _engine(harness, alice, "network", "rm", "hijack", check=False)


def test_networks_a_user_makes_in_the_pool_never_leave_the_next_user_without_a_block(harness, pair):
    (alice, bob), info = pair
    pool = ipaddress.ip_network(harness.pool)
    leased = [ipaddress.ip_network(info[u]["block"]) for u in (alice, bob)]
    first_free = max(b.broadcast_address for b in leased) + 1
    rogue = list(ipaddress.summarize_address_range(first_free, pool.broadcast_address))
    made = []
    try:
        for i, net in enumerate(rogue):
            _engine(harness, alice, "network", "create", "--subnet", str(net), f"grab{i}")
            made.append(f"grab{i}")
        carol = harness.add_user()
        harness.berth("up", carol)  # once: "no free /24 left"
        row = json.loads(harness.berth("status", carol, "--json").stdout)["users"][0]
        assert row["state"] == "up" and ipaddress.ip_network(row["block"]).subnet_of(pool)
        # her block is hers alone: alice's bridge that covered it has given its address up
        assert [link for link, _ in _addresses_in(row["block"])] == [row["bridge"]]
        r = subprocess.run(["timeout", "4", BUSYBOX, "ping", "-c", "1", row["net_ip"]], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        harness.berth("down", "--purge", "--yes", carol)
    finally:
        for name in made:
            _engine(harness, alice, "network", "rm", name, check=False)


def test_a_users_own_networks_send_only_the_users_addresses(harness, pair):
    """A network made through the policy proxy gets a bridge named after the user's, which berth's
    anti-spoofing rules cover: a forged source from it never reaches even the host."""
    (alice, bob), info = pair
    r = subprocess.run(["runuser", "-u", alice, "--", DEBIAN_CLI, "-H", f"unix://{harness.sock(alice)}", "network",
                        "create", "mine"], capture_output=True, text=True, env={**os.environ, "HOME": "/"})
    assert r.returncode == 0, r.stderr
    ns = None
    try:
        net = json.loads(_engine(harness, alice, "network", "inspect", "mine").stdout)[0]
        link = net["Options"]["com.docker.network.bridge.name"]
        assert link.startswith(info[alice]["bridge"] + ".") and len(link) <= 15
        subnet = ipaddress.ip_network(net["IPAM"]["Config"][0]["Subnet"])
        assert subnet.subnet_of(ipaddress.ip_network(info[alice]["block"]))
        gateway, mine = str(subnet.network_address + 1), str(subnet.broadcast_address - 1)
        ns = Namespace(f"bt{harness.tag}m", link, mine, subnet.prefixlen, gateway)
        host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        host.bind((gateway, 0))
        host.settimeout(2)
        port = str(host.getsockname()[1])

        def arrives(src, word):
            """Whether `word` sent from `src` arrived: read until a datagram sent after it, from the
            namespace's own address (always delivered), arrives, on the same path."""
            ns.run(sys.executable, "-c", SEND, src, gateway, port, word)
            ns.run(sys.executable, "-c", SEND, mine, gateway, port, "after-" + word)
            got = []
            while got[-1:] != ["after-" + word]:
                got.append(host.recv(100).decode())  # a lost marker: socket.timeout
            return word in got

        assert arrives(mine, "own-address")
        assert not arrives("198.51.100.7", "forged-outsider")
        subprocess.run(["iptables-legacy", "-t", "raw", "-F", f"{harness.chain_prefix}-PREROUTING"], check=True)
        assert arrives("198.51.100.7", "unchecked-outsider")  # the control: it is the rule that stops it
        harness.berth("up", alice)
        harness.berth("up", bob)
        assert not arrives("198.51.100.7", "forged-again")
        host.close()
    finally:
        if ns is not None:
            ns.close()
        _engine(harness, alice, "network", "rm", "mine", check=False)


def test_published_ports_keep_their_meaning(harness, pair):
    """-p publishes on the host for everyone, as it does without berth (docker-proxy is root's)."""
    (alice, bob), info = pair
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    harness.docker(alice, "run", "-d", "--name", "published", "-p", f"127.0.0.1:{port}:{PORT}", info[alice]["img"],
                   "sh", "-c", f"echo published-by-{alice} > /www/index.html && exec httpd -f -p {PORT} -h /www",
                   cli=DEBIAN_CLI)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(50):
            r = subprocess.run(["runuser", "-u", bob, "--", "timeout", "4", BUSYBOX, "wget", "-q", "-O", "-", url],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.stdout.strip() == f"published-by-{alice}", r.stderr
    finally:
        harness.docker(alice, "rm", "-f", "published", check=False, cli=DEBIAN_CLI)


# --- what dockerd itself fetches for a user -----------------------------------------------
#
# dockerd fetches as root on the host, from its own cgroup: berth's rules drop what it sends into
# another user's block. A dropped SYN leaves dockerd waiting 30 to 60 s before it gives up, so
# these tests do not wait for that: a listener of the test's own in alice's block records whether
# anything reached it, and netprobe.assert_dropped sees dockerd's SYN go out and stay unanswered.


@pytest.fixture
def alices_listener(harness, pair):
    """A TCP listener at an address in alice's block, on her bridge."""
    (alice, _), info = pair
    listener = Listener(f"bt{harness.tag}w", info[alice]["bridge"], info[alice]["block"])
    yield listener
    listener.close()


def _as_user(user, argv, **env):
    """`argv` run as `user`, in a session of its own (netprobe.end kills it whole); output in stdout."""
    return subprocess.Popen(["runuser", "-u", user, "--", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "HOME": "/", **env})


def _build(harness, user, dockerfile, buildkit):
    """`docker build` as the user through their own socket, started: the process.
    Debian's CLI: dockerd 20.10's own BuildKit speaks to it (the newer CLI wants buildx); what is
    tested is what dockerd fetches, whichever CLI asked."""
    context = tempfile.mkdtemp(dir=harness.root)  # pytest's tmp_path is root's alone
    os.chmod(context, 0o755)
    with open(os.path.join(context, "Dockerfile"), "w") as f:
        f.write(dockerfile)
    extra = ["--progress=plain"] if buildkit else []
    return _as_user(user, [DEBIAN_CLI, "-H", f"unix://{harness.sock(user)}", "build", "--no-cache", *extra,
                           "-t", f"bt-fetch-{int(buildkit)}", context],
                    DOCKER_BUILDKIT="1" if buildkit else "0")


@pytest.mark.parametrize("buildkit", [False, True], ids=["legacy-builder", "buildkit"])
def test_a_build_fetches_from_its_own_block_never_from_another_users(harness, pair, alices_listener, buildkit):
    """ADD <url> is fetched by dockerd itself, as root on the host: bob's daemon gets his own page and
    never reaches alice's block, whatever the Dockerfile says."""
    (alice, bob), info = pair
    dockerfile = f"FROM {info[bob]['img']}\nADD http://{{ip}}:{{port}}/ /page\nRUN cat /page\n"
    own = _build(harness, bob, dockerfile.format(ip=info[bob]["ip"], port=PORT), buildkit)
    out = own.communicate(timeout=120)[0]
    assert own.returncode == 0 and f"page-of-{bob}" in out, out
    listener = alices_listener
    other = _build(harness, bob, dockerfile.format(ip=listener.address, port=listener.port), buildkit)
    assert_dropped(other, listener.address, listener.port, listener)
    # root's own tools still reach every block, and alice her own
    assert fetch(info[alice]["ip"]) == f"page-of-{alice}"
    assert fetch(info[alice]["ip"], as_user=alice) == f"page-of-{alice}"


def test_a_pull_from_another_users_address_tells_nothing_of_their_ports(harness, pair, alices_listener):
    """`docker pull <ip>:<port>/x` makes dockerd connect: into another user's block nothing answers,
    for a port that listens as for one that does not (neither a SYN-ACK nor a reset comes back)."""
    (alice, bob), info = pair

    def pull(ip, port):
        return _as_user(bob, [DEBIAN_CLI, "-H", f"unix://{harness.sock(bob)}", "pull", f"{ip}:{port}/x"])

    listener = alices_listener
    for port in (listener.port, listener.port + 1):  # listening, and (nothing there) not
        assert_dropped(pull(listener.address, port), listener.address, port, listener)

    # the control: his own listener answers (HTTP to dockerd's HTTPS), a closed port of his refuses
    def answer(ip, port):
        p = pull(ip, port)
        out = p.communicate(timeout=120)[0]
        assert p.returncode != 0, out
        return out

    assert "server gave HTTP response to HTTPS client" in answer(info[bob]["ip"], PORT)
    assert "connection refused" in answer(info[bob]["ip"], PORT + 7)


def test_a_users_daemon_runs_in_a_cgroup_of_its_own(harness, pair):
    from berth.daemon import cgroups
    (alice, bob), _ = pair
    root = cgroups.v2_root()
    for user in (alice, bob):
        (pid,) = harness.dockerd_pids(user)
        with open(f"/proc/{pid}/cgroup") as f:
            line = next(line for line in f if line.startswith("0::"))
        assert line.strip() == f"0::/{cgroups.DAEMONS}/{user}", line
        assert os.getxattr(os.path.join(root, cgroups.DAEMONS, user), cgroups.MARK) == b"1"  # its rules name it


# --- IPv6 -----------------------------------------------------------------------------------

V6_PORT = 8086

FETCH6 = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4)
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    print(answer.decode(errors="replace").split("\\r\\n\\r\\n", 1)[-1].strip())
except OSError as e:
    print("FAILED", e)
"""


def _fetch6(address, as_user=None):
    # a test user cannot run this checkout's venv where it is private (/root on Debian); FETCH6 is stdlib
    cmd = ["/usr/bin/python3" if as_user else sys.executable, "-c", FETCH6, address, str(V6_PORT)]
    if as_user:
        cmd = ["runuser", "-u", as_user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()


def test_ipv6_link_local_reaches_a_container_from_its_owner_only(harness, pair):
    (alice, bob), info = pair
    img = info[alice]["img"]
    harness.docker(alice, "run", "-d", "--name", "six", "--sysctl", "net.ipv6.conf.all.disable_ipv6=0", img, "sh",
                   "-c", f"echo six-of-{alice} > /www/index.html && exec httpd -f -p {V6_PORT} -h /www", cli=DEBIAN_CLI)
    try:
        address = None
        for _ in range(50):  # the link-local address comes after duplicate address detection
            out = harness.docker(alice, "exec", "six", "ip", "-6", "addr", "show", "dev", "eth0", cli=DEBIAN_CLI).stdout
            found = [w.split("/")[0] for w in out.split() if w.startswith("fe80:")]
            if found and "tentative" not in out:
                address = found[0]
                break
            time.sleep(0.1)
        assert address, out
        scoped = f"{address}%{info[alice]['bridge']}"
        for _ in range(50):
            if _fetch6(scoped) == f"six-of-{alice}":
                break
            time.sleep(0.1)
        assert _fetch6(scoped) == f"six-of-{alice}"                 # root
        assert _fetch6(scoped, as_user=alice) == f"six-of-{alice}"  # its owner's shell
        # another user's shell: dropped, its SYN unanswered (netprobe.assert_dropped)
        assert_dropped(subprocess.Popen(["runuser", "-u", bob, "--", "/usr/bin/python3", "-c", FETCH6, scoped,
                                         str(V6_PORT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True), address, V6_PORT)
        # and from the owner's other containers on her bridge, as over IPv4
        r = harness.docker(alice, "run", "--rm", "--sysctl", "net.ipv6.conf.all.disable_ipv6=0", img, "sh", "-c",
                           f"sleep 2; timeout 4 wget -q -O - 'http://[{address}%eth0]:{V6_PORT}/' || echo REFUSED",
                           cli=DEBIAN_CLI)
        assert f"six-of-{alice}" in r.stdout, r.stdout + r.stderr
    finally:
        harness.docker(alice, "rm", "-f", "six", check=False, cli=DEBIAN_CLI)


def test_an_ipv6_network_is_refused_with_what_to_do(harness, pair):
    (alice, _), _ = pair
    r = harness.docker(alice, "network", "create", "--ipv6", "six", check=False, as_user=alice, cli=DEBIAN_CLI)
    assert r.returncode != 0 and "berth: " in r.stderr and "--ipv6" in r.stderr, r.stderr


# --- what goes with a user -------------------------------------------------------------------

def test_purge_leaves_no_bridge_cgroup_or_ipv6_rule_of_the_user(harness):
    """A user's own networks have bridges of their own (bth<uid>.<suffix>) that dockerd leaves when it
    stops: purge removes them, so the block's next user finds none; down removes the daemon's cgroup
    and the user's IPv6 rules."""
    from berth.daemon import cgroups
    carol = harness.add_user()
    harness.berth("up", carol)
    row = json.loads(harness.berth("status", carol, "--json").stdout)["users"][0]
    r = harness.docker(carol, "network", "create", "hers", check=False, as_user=carol, cli=DEBIAN_CLI)
    assert r.returncode == 0, r.stderr
    links = [n for n in os.listdir("/sys/class/net") if n.startswith(row["bridge"] + ".")]
    assert links, os.listdir("/sys/class/net")
    daemon_cgroup = os.path.join(cgroups.v2_root(), cgroups.DAEMONS, carol)
    assert os.path.isdir(daemon_cgroup)
    six = subprocess.run(["ip6tables-legacy-save"], capture_output=True, text=True).stdout
    assert f"berth:{carol}" in six
    harness.berth("down", carol)
    assert not os.path.exists(daemon_cgroup)
    assert f"berth:{carol}" not in subprocess.run(["ip6tables-legacy-save"], capture_output=True, text=True).stdout
    harness.berth("down", "--purge", "--yes", carol)
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(row["bridge"])]
