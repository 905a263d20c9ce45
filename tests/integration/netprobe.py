"""Network namespaces of a test's own on a user's bridge, a TCP listener in
one that records every connection it takes, and the proof that a
connection dockerd makes to it is dropped: its SYN goes out, is sent again
(the kernel's first retransmission comes after 1 s), and nothing ever
answers. That proof takes seconds; waiting for dockerd to give up on its
own took 30 to 60."""

import ipaddress
import os
import subprocess
import sys
import time


class Namespace:
    """A network namespace of the test's own, on a user's bridge by a veth pair."""

    def __init__(self, name, bridge, address, prefixlen, gateway):
        self.name = name
        host_end = name + "h"
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", name + "n"], check=True)
            subprocess.run(["ip", "link", "set", host_end, "master", bridge, "up"], check=True)
            subprocess.run(["ip", "link", "set", name + "n", "netns", name], check=True)
            self.run("ip", "addr", "add", f"{address}/{prefixlen}", "dev", name + "n")
            self.run("ip", "link", "set", name + "n", "up")
            self.run("ip", "link", "set", "lo", "up")
            self.run("ip", "route", "add", "default", "via", gateway)
        except BaseException:
            self.close()
            raise

    def run(self, *argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=True, capture_output=True,
                              text=True, **kw)

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.name + "h"], capture_output=True)


def hosts(block, n):
    """(the n-th address of the block's bridge half counted from its top, its prefix length, the
    bridge's gateway): dockerd hands addresses out from below, so these stay clear of containers."""
    bridge_half = list(ipaddress.ip_network(block).subnets(prefixlen_diff=1))[0]
    return str(bridge_half.broadcast_address - n), bridge_half.prefixlen, str(next(bridge_half.hosts()))


LISTEN = """
import socket
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, peer = s.accept()
    print("connection from", peer[0], flush=True)
    c.close()
"""


class Listener:
    """A TCP listener at `address` in a namespace of its own on `bridge`
    (an address of that user's block): `port`, and `connections()`, every
    connection it has accepted so far."""

    def __init__(self, name, bridge, block):
        address, prefixlen, gateway = hosts(block, 3)
        self.address = address
        self.ns = Namespace(name, bridge, address, prefixlen, gateway)
        try:
            self.proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", LISTEN],
                                         stdout=subprocess.PIPE, text=True)
            self.port = int(self.proc.stdout.readline())
            os.set_blocking(self.proc.stdout.fileno(), False)
        except BaseException:
            self.ns.close()
            raise
        self._seen = []

    def connections(self):
        while line := self.proc.stdout.readline():
            self._seen.append(line.strip())
        return list(self._seen)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.ns.close()


def unanswered_syns(address, port, netns=None):
    """Sockets still waiting for an answer to their SYN to address:port, in the host's network
    namespace (dockerd's, a shell's) or in `netns` (a path: a container's /proc/<pid>/ns/net)."""
    host = f"[{address}]" if ":" in address else address
    enter = ["nsenter", f"--net={netns}"] if netns else []
    r = subprocess.run([*enter, "ss", "-Htn", "state", "syn-sent", "dst", f"{host}:{port}"],
                       capture_output=True, text=True)
    if r.returncode != 0 and netns and not os.path.exists(netns):
        return []  # the container is gone: it sends nothing
    r.check_returncode()
    return r.stdout.splitlines()


def assert_dropped(client, address, port, listener=None, within=60.0, held=1.5, netns=None):
    """`client`, a process whose request has dockerd (or a shell, or a container in `netns`)
    connect to address:port, gets it nowhere: the SYN goes out, is still unanswered `held`
    seconds later (resent once by then), and `listener` (at that address) took no
    connection. Ends the client."""
    try:
        deadline = time.monotonic() + within
        while not unanswered_syns(address, port, netns):
            if client.poll() is not None or time.monotonic() > deadline:
                seen = listener.connections() if listener else "(no listener)"
                raise AssertionError(f"no unanswered connection to {address}:{port} was seen; listener: {seen}; "
                                     f"client: {end(client)!r}, exit {client.returncode}")
            time.sleep(0.02)
        time.sleep(held)
        assert unanswered_syns(address, port, netns), \
            f"the connection to {address}:{port} was answered: {end(client)!r}"
        if listener is not None:
            assert listener.connections() == [], listener.connections()
        assert client.poll() is None or client.returncode != 0, end(client)
    finally:
        end(client)


def end(client):
    """Kill a client started with start_new_session=True, and what it started (runuser's child):
    what it wrote (once; empty after)."""
    if client.poll() is None:
        try:
            os.killpg(client.pid, 9)
        except ProcessLookupError:
            pass
    if client.stdout is None or client.stdout.closed:
        client.wait()
        return ""
    return client.communicate()[0]
