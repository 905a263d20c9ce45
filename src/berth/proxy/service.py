"""The policy proxy as a host-wide service: one process serves the
docker.sock of every hardened user, each in front of that user's dockerd
(whose own socket only root reaches).

berth up starts it where none answers (proxyctl) and asks it to serve a
user; berth down asks it to drop one. It reads what it needs for a user
from the root-owned spec berth up wrote (spec.py), so after a crash or
a restart it serves everyone who was up, on its own.

Control: <run_dir>/berth-proxy/ctl.sock, root's alone; one line each way.
    ping          -> ok pid=<pid> users=<n> jobs=<n> connections=<n>
    serve <user>  -> ok        (binds <run_dir>/<user>/docker.sock, user:root 0600)
    drop <user>   -> ok        (closes and removes it, and the user's job sockets)
    serve-job <user> <id> -> ok (binds <run_dir>/<user>/job-<id>.sock, user:root 0600,
                                 held to the job's grant, job-<id>.grant: jobpolicy)
    drop-job <user> <id>  -> ok (closes and removes it, and ends the connections open on it)
    stats         -> ok <json> (per user: open connections, requests, refusals; their jobs')
    refusals [<user>] -> ok <json> (that user's recent refusals, or everyone's: refusals.document)
A failure is `error <sentence>`.

A job's socket is its user's socket and the grant: the same spec, share
and refusals. A grant that says why the job has no daemon (its `error`)
is served without either: every request gets that sentence, as a 503.

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
import re
import resource
import signal
import socket
import sys

from berth.core import paths, users
from berth.core.fsutil import ensure_dir, read_trusted, remove
from berth.proxy import apijson, jobgrant, jobmemory, jobpolicy, pins, policy, refusals
from berth.proxy.binds import Binds
from berth.proxy.handler import Handler, peer_uid, serve_socket
from berth.proxy.share import Pool, Share
from berth.proxy.spec import NO_GPUS, context, parse

log = logging.getLogger("berth.proxy")

MAX_CONNECTIONS = 256
GRANT_FILE = re.compile(r"job-([0-9]+)\.grant")
DROP_WAIT = 2.0  # s a drop-job waits for the connections it ended (the control call waits 5)


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


class Served:
    """One socket the proxy serves: `path`, uid:root 0600, with `handler`.
    `key`: what it was made from; the same key served again is left be."""

    def __init__(self, path, uid, handler, key):
        self.path = path
        self.uid = uid
        self.handler = handler
        self.key = key
        self.server = None
        self.inode = None

    async def open(self):
        sock, self.inode = bind_private(self.path, self.uid)
        self.server = await serve_socket(self.handler, sock)

    def in_place(self):
        """Our socket file is still the one at the path (nobody replaced or removed it)."""
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def close(self, unlink=True):
        if self.server is not None:
            self.server.close()
        if unlink and self.in_place():
            remove(self.path)


def user_socket(spec, upaths, share, recent, user_tasks, path=None, hold=None, key=None, job_memory=None):
    """A user's socket in front of their dockerd: docker.sock (held back
    from GPUs where the spec says so), or a job's at `path`, held to `hold`
    (and to the job's memory, `job_memory`, once Slurm's cgroup holds it)."""
    binds = None
    if spec.pins:
        store = pins.Store(spec.uid, spec.pins, os.path.join(upaths.run_dir, "pins"))
        binds = Binds(store, upaths, upaths.engine_socket,
                      loads=lambda body: share.work(apijson.loads, (body,), len(body)))
    if hold is None and spec.gpus == NO_GPUS:
        hold = jobpolicy.LOGIN
    handler = Handler(upaths.engine_socket, context(spec), user=spec.user,
                      uids=(spec.uid, 0), max_connections=MAX_CONNECTIONS, share=share,
                      binds=binds, recent=recent, hold=hold, user_tasks=user_tasks, job_memory=job_memory)
    return Served(path or upaths.socket, spec.uid, handler, spec if key is None else key)


def failed_job_socket(grant, upaths, user_tasks):
    """A job's socket whose grant says why it has no daemon: each request
    is answered with that, and nothing reaches a dockerd."""
    what, _, instead = grant.error.partition("; ")
    answer = (503, what, instead or "ask your administrator (see berth's log on this node)")
    handler = Handler(upaths.engine_socket, policy.Context(""), user=grant.user, uids=(grant.uid, 0),
                      max_connections=MAX_CONNECTIONS, answer_all=answer, user_tasks=user_tasks)
    return Served(upaths.job_socket(grant.job_id), grant.uid, handler, grant)


class ProxyService:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.dir = paths.proxy_dir(run_dir)
        self.users = {}
        self.jobs = {}  # (user, job id) -> Served: Slurm jobs' sockets
        self.pool = Pool()
        self.shares = {}  # a user's share outlives a socket served again: their requests under way hold it
        self.recent = {}  # a user's refusals.Ring, kept while they are served (a socket served again too)
        self.connections = {}  # a user's connections on all their sockets: MAX_CONNECTIONS is the user's
        self.control = None

    # --- users ------------------------------------------------------------

    def _spec(self, name, upaths):
        raw = read_trusted(upaths.proxy_spec)
        if raw is None:
            raise LookupError(f"no proxy spec for {name} ({upaths.proxy_spec})")
        spec = parse(raw.decode())
        if spec.user != name:
            raise LookupError(f"the proxy spec in {upaths.proxy_spec} names {spec.user!r}")
        return spec

    def _share(self, name):
        share = self.shares.get(name)
        if share is None:
            share = self.shares[name] = Share(self.pool)
        return share

    async def _put(self, table, key, served):
        """Serve `served` as table[key], unless what is there was made the same way and is in place."""
        current = table.get(key)
        if current is not None and current.key == served.key and current.in_place():
            return False
        if current is not None:
            current.close(unlink=False)  # the new socket replaces it by rename
        await served.open()
        table[key] = served
        return True

    async def serve(self, name):
        users.check_name(name)
        upaths = paths.in_run_dir(self.run_dir, name)
        spec = self._spec(name, upaths)
        recent = self.recent.setdefault(name, refusals.Ring())
        served = user_socket(spec, upaths, self._share(name), recent, self.connections.setdefault(name, set()))
        if await self._put(self.users, name, served):
            log.info("serving %s (uid %d) at %s", name, spec.uid, upaths.socket)
        # A user served again while jobs of theirs run (their dockerd died,
        # the reaper took them down, a login brought them up): the jobs'
        # sockets come back with the login socket.
        await self._serve_jobs_of(name, upaths)

    async def _serve_jobs_of(self, name, upaths):
        """Every job of `name`'s whose grant is in place; their (user, id)s."""
        try:
            files = os.listdir(upaths.run_dir)
        except OSError:
            return set()
        served = set()
        for job_id in sorted(int(m[1]) for m in map(GRANT_FILE.fullmatch, files) if m):
            served.add((name, job_id))
            try:
                await self.serve_job(name, job_id)
            except (OSError, LookupError, ValueError) as e:
                log.error("cannot serve job %d of %s: %s", job_id, name, e)
        return served

    async def serve_job(self, name, job_id):
        """The socket of a Slurm job of `name`'s, held to its grant."""
        users.check_name(name)
        job_id = int(job_id)
        upaths = paths.in_run_dir(self.run_dir, name)
        raw = read_trusted(upaths.job_grant(job_id))
        if raw is None:
            raise LookupError(f"no grant for job {job_id} of {name} ({upaths.job_grant(job_id)})")
        grant = jobgrant.parse(raw.decode())
        if grant.user != name or grant.job_id != job_id:
            raise LookupError(f"the grant in {upaths.job_grant(job_id)} is job {grant.job_id} of {grant.user!r}")
        if grant.error:
            served = failed_job_socket(grant, upaths, self.connections.setdefault(name, set()))
        else:
            spec = self._spec(name, upaths)
            if spec.uid != grant.uid:
                raise LookupError(f"the grant of job {job_id} names uid {grant.uid}, {name}'s spec {spec.uid}")
            recent = self.recent.setdefault(name, refusals.Ring())
            served = user_socket(spec, upaths, self._share(name), recent, self.connections.setdefault(name, set()),
                                 path=upaths.job_socket(job_id), hold=jobpolicy.for_grant(grant), key=(spec, grant),
                                 job_memory=jobmemory.for_grant(grant))
        if await self._put(self.jobs, (name, job_id), served):
            log.info("serving job %d of %s at %s (GPUs: %s%s)", job_id, name, served.path,
                     ",".join(grant.gpus) or "none", f"; refusing all: {grant.error}" if grant.error else "")

    def drop_job(self, name, job_id):
        """Close the job's socket and end the connections open on it; the
        tasks of those, ending."""
        users.check_name(name)
        served = self.jobs.pop((name, int(job_id)), None)
        if served is None:  # one a proxy before this one served: gone all the same
            remove(paths.in_run_dir(self.run_dir, name).job_socket(job_id))
            return set()
        served.close()
        log.info("no longer serving job %d of %s", int(job_id), name)
        return served.handler.end_connections()  # the job has ended: so has what was open on its socket

    def drop(self, name):
        self.shares.pop(name, None)  # requests under way keep theirs; a user served again starts afresh
        self.recent.pop(name, None)
        self.connections.pop(name, None)  # connections under way end with their sockets
        for user, job_id in [k for k in self.jobs if k[0] == name]:
            self.drop_job(user, job_id)
        served = self.users.pop(name, None)
        if served is not None:
            served.close()
            log.info("no longer serving %s", name)

    async def serve_all(self):
        """Everyone whose spec is in place, and every job whose grant is:
        after a crash or a restart (a job whose grant is gone is dropped)."""
        try:
            names = sorted(os.listdir(self.run_dir))
        except FileNotFoundError:
            return
        grants = set()
        for name in names:
            if name.startswith(users.RESERVED_PREFIX) or not users.is_valid_name(name):
                continue
            upaths = paths.in_run_dir(self.run_dir, name)
            if os.path.exists(upaths.proxy_spec):
                try:
                    await self.serve(name)
                except (OSError, LookupError, ValueError) as e:
                    log.error("cannot serve %s: %s", name, e)
            grants |= await self._serve_jobs_of(name, upaths)  # a failed job's socket needs no spec
        for name, job_id in [k for k in self.jobs if k not in grants]:
            self.drop_job(name, job_id)

    def stats(self):
        def of(s):
            return {"connections": len(s.handler.tasks), "requests": s.handler.requests,
                    "refused": s.handler.refused}

        def of_job(s):
            grant = s.key if isinstance(s.key, jobgrant.Grant) else s.key[1]  # a failed job's grant, or (spec, grant)
            held = s.handler.job_memory.copied if s.handler.job_memory is not None else grant.memory
            return {**of(s), "memory": held}  # bytes the job's containers are held to (0: none known)
        jobs = {}
        for (name, job_id), s in sorted(self.jobs.items()):
            jobs.setdefault(name, {})[str(job_id)] = of_job(s)
        return {name: {"uid": s.key.uid, **of(s),
                       "body_bytes": s.handler.share.account.raw, "parsed_bytes": s.handler.share.account.parsed,
                       "over_share": s.handler.share.over_cap, "paced": s.handler.share.paced,
                       "jobs": jobs.get(name, {})}
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
            if peer_uid(writer) != 0:
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
                    connections = sum(len(s.handler.tasks) for s in (*self.users.values(), *self.jobs.values()))
                    return (f"ok pid={os.getpid()} users={len(self.users)} jobs={len(self.jobs)} "
                            f"connections={connections}")
                case ["serve", name]:
                    await self.serve(name)
                case ["drop", name]:
                    self.drop(name)
                case ["serve-job", name, job_id]:
                    await self.serve_job(name, job_id)
                case ["drop-job", name, job_id]:
                    ending = self.drop_job(name, job_id)
                    if ending:  # answered once they are: the Epilog then lists the job's containers
                        _, outlasting = await asyncio.wait(ending, timeout=DROP_WAIT)
                        for task in outlasting:  # a stream (logs -f, attach) or a body never sent
                            task.cancel()
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
    for served in (*service.users.values(), *service.jobs.values()):
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
