"""The policy proxy as a host-wide service: one process serves the
docker.sock of every hardened user, each in front of that user's dockerd
(whose own socket only root reaches).

berth up starts it where none answers (proxyctl) and asks it to serve a
user; berth down asks it to drop one. It reads what it needs for a user
from the root-owned spec berth up wrote (spec.py), so after a crash or
a restart it serves everyone who was up, on its own.

Control: <run_dir>/berth-proxy/ctl.sock, root's alone; one line each way.
    ping          -> ok pid=<pid> users=<n> connections=<n>
    serve <user>  -> ok        (binds <run_dir>/<user>/docker.sock, user:root 0600)
    drop <user>   -> ok        (closes and removes it)
    stats         -> ok <json> (per user: open connections, requests, refusals)
    refusals [<user>] -> ok <json> (that user's recent refusals, or everyone's: refusals.document)
A failure is `error <sentence>`.

Fairness: each client connection has its own upstream connection and task,
so one user's slow or stuck client holds up nobody else; a user may hold at
most MAX_CONNECTIONS at once, so no one can take the process's descriptors;
the memory and CPU one user's request bodies take are bounded by their
share.Share (one for each user, on every socket of theirs).
"""

import asyncio
import fcntl
import json
import logging
import os
import resource
import signal
import socket
import sys

from berth.core import paths, users
from berth.core.fsutil import ensure_dir, read_trusted, remove
from berth.proxy import apijson, handler, pins, refusals
from berth.proxy.binds import Binds
from berth.proxy.share import Pool, Share
from berth.proxy.spec import context, parse

log = logging.getLogger("berth.proxy")

MAX_CONNECTIONS = 256
def bind_private(path, uid):
    """A listening unix socket at `path`, uid:root 0600 from its first
    moment (bound under a umask that leaves nobody else a window), put in
    place by rename so a stale one is replaced atomically."""
    tmp = path + ".new"
    remove(tmp)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            s.bind(tmp)
        finally:
            os.umask(old)
        os.chown(tmp, uid, 0)
        s.listen(128)
        os.rename(tmp, path)
        s.setblocking(False)
        return s, os.stat(path).st_ino
    except OSError:
        s.close()
        remove(tmp)
        raise


class UserSocket:
    """One user's docker.sock, served in front of their dockerd's."""

    def __init__(self, spec, upaths, share, recent):
        self.spec = spec
        self.upaths = upaths
        binds = None
        if spec.pins:
            store = pins.Store(spec.uid, spec.pins, os.path.join(upaths.run_dir, "pins"))
            binds = Binds(store, upaths, upaths.engine_socket,
                                     loads=lambda body: share.work(apijson.loads, (body,), len(body)))
        self.handler = handler.Handler(upaths.engine_socket, context(spec), user=spec.user,
                                     uids=(spec.uid, 0), max_connections=MAX_CONNECTIONS, share=share,
                                     binds=binds, recent=recent)
        self.server = None
        self.inode = None

    async def open(self):
        sock, self.inode = bind_private(self.upaths.socket, self.spec.uid)
        self.server = await handler.serve_socket(self.handler, sock)

    def in_place(self):
        """Our socket file is still the one at the path (nobody replaced or removed it)."""
        try:
            return os.stat(self.upaths.socket).st_ino == self.inode
        except OSError:
            return False

    def close(self, unlink=True):
        if self.server is not None:
            self.server.close()
        if unlink and self.in_place():
            remove(self.upaths.socket)


class ProxyService:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.dir = paths.proxy_dir(run_dir)
        self.users = {}
        self.pool = Pool()
        self.shares = {}  # a user's share outlives a socket served again: their requests under way hold it
        self.recent = {}  # a user's refusals.Ring, kept while they are served (a socket served again too)
        self.control = None

    # --- users ------------------------------------------------------------

    async def serve(self, name):
        users.check_name(name)
        upaths = paths.in_run_dir(self.run_dir, name)
        raw = read_trusted(upaths.proxy_spec)
        if raw is None:
            raise LookupError(f"no proxy spec for {name} ({upaths.proxy_spec})")
        spec = parse(raw.decode())
        if spec.user != name:
            raise LookupError(f"the proxy spec in {upaths.proxy_spec} names {spec.user!r}")
        current = self.users.get(name)
        if current is not None and current.spec == spec and current.in_place():
            return
        if current is not None:
            current.close(unlink=False)  # the new socket replaces it by rename
        share = self.shares.get(name)
        if share is None:
            share = self.shares[name] = Share(self.pool)
        recent = self.recent.setdefault(name, refusals.Ring())
        served = UserSocket(spec, upaths, share, recent)
        await served.open()
        self.users[name] = served
        log.info("serving %s (uid %d) at %s", name, spec.uid, upaths.socket)

    def drop(self, name):
        self.shares.pop(name, None)  # requests under way keep theirs; a user served again starts afresh
        self.recent.pop(name, None)
        served = self.users.pop(name, None)
        if served is not None:
            served.close()
            log.info("no longer serving %s", name)

    async def serve_all(self):
        """Everyone whose spec is in place: after a crash or a restart."""
        try:
            names = sorted(os.listdir(self.run_dir))
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(users.RESERVED_PREFIX) or not users.is_valid_name(name):
                continue
            if os.path.exists(paths.in_run_dir(self.run_dir, name).proxy_spec):
                try:
                    await self.serve(name)
                except (OSError, LookupError, ValueError) as e:
                    log.error("cannot serve %s: %s", name, e)

    def stats(self):
        return {name: {"uid": s.spec.uid, "connections": len(s.handler.tasks),
                       "requests": s.handler.requests, "refused": s.handler.refused,
                       "body_bytes": s.handler.share.account.raw, "parsed_bytes": s.handler.share.account.parsed,
                       "over_share": s.handler.share.over_cap, "paced": s.handler.share.paced}
                for name, s in sorted(self.users.items())}

    def refusals(self, name=None):
        """The refusals.document of one user served, or of every one."""
        names = [name] if name is not None else sorted(self.recent)
        return refusals.document([e for n in names for e in self.recent[n].to_json(n)])

    # --- control ----------------------------------------------------------

    async def start_control(self):
        ensure_dir(self.dir, paths.ROOT_ONLY)
        sock, _ = bind_private(os.path.join(self.dir, "ctl.sock"), 0)
        self.control = await asyncio.start_unix_server(self.on_control, sock=sock)

    async def on_control(self, reader, writer):
        try:
            if handler.peer_uid(writer) != 0:
                return
            line = (await reader.readline()).decode(errors="replace").split()
            writer.write((await self.answer(line) + "\n").encode())
            await writer.drain()
        except (ConnectionError, OSError) as e:
            log.debug("control connection ended: %s", e)
        finally:
            writer.close()

    async def answer(self, words):
        try:
            match words:
                case ["ping"]:
                    connections = sum(len(s.handler.tasks) for s in self.users.values())
                    return f"ok pid={os.getpid()} users={len(self.users)} connections={connections}"
                case ["serve", name]:
                    await self.serve(name)
                case ["drop", name]:
                    self.drop(name)
                case ["stats"]:
                    return "ok " + json.dumps(self.stats(), separators=(",", ":"))
                case ["refusals", name] if name not in self.recent:
                    return f"error the policy proxy does not serve {name[:80]}"
                case ["refusals", *name] if len(name) <= 1:
                    return "ok " + json.dumps(self.refusals(*name), separators=(",", ":"))
                case _:
                    return "error unknown request " + " ".join(words)[:80]
        except Exception as e:  # one bad request must not end the service for everyone
            log.error("%s failed: %s", " ".join(words), e)
            return f"error {e}"
        return "ok"


def _singleton(directory):
    """Hold the proxy's lock for the life of the process; None if another holds it."""
    fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _run(run_dir):
    service = ProxyService(run_dir)
    await service.start_control()
    await service.serve_all()
    log.info("berth proxy %d ready: serving %d user(s)", os.getpid(), len(service.users))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rescans = set()  # held: the loop keeps tasks only weakly

    def rescan():
        task = asyncio.ensure_future(service.serve_all())
        rescans.add(task)
        task.add_done_callback(rescans.discard)

    loop.add_signal_handler(signal.SIGHUP, rescan)
    await stop.wait()
    log.info("berth proxy %d stopping", os.getpid())
    service.control.close()
    # Users' sockets stay: with nobody listening they refuse, as after a
    # crash, and the next proxy replaces them.
    for served in service.users.values():
        served.close(unlink=False)
    service.pool.close()


def _event_loop_run():
    """uvloop's run where it is installed (a setup.cfg requirement; a distro
    install may lack it): its transports write a list of pieces with one
    writev and read with less overhead (docs/performance.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(run_dir):
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(message)s")
    if os.geteuid() != 0:
        print("berth: 'berth proxy' needs root: it serves every user's socket", file=sys.stderr)
        return 1
    ensure_dir(run_dir, paths.TRAVERSE_ONLY)
    directory = ensure_dir(paths.proxy_dir(run_dir), paths.ROOT_ONLY)
    lock = _singleton(directory)
    if lock is None:
        log.info("another berth proxy serves %s; leaving it be", run_dir)
        return 0
    _raise_fd_limit()
    # Bodies are parsed in worker threads (proxy/share.py): the loop, which
    # serves everybody, gets the interpreter back within 1 ms, not 5.
    sys.setswitchinterval(0.001)
    _event_loop_run()(_run(run_dir))
    return 0
