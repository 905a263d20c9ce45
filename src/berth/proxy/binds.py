"""The proxy's side of pins.py: a container's bind sources resolved and
pinned as the user before its create reaches dockerd, re-pinned before
each start, shown as the user's paths in dockerd's answers, and swept
when their container is gone.

Refusals and errors read as dockerd's would: a source the user cannot
reach is berth's 403, a missing `--mount` source dockerd's own 400.
"""

import asyncio
import errno
import logging
import os
import re

from berth.core import record
from berth.proxy import apijson, containercopy, pins, policy

log = logging.getLogger(__name__)

# What a create or start answers instead of going on: (status, message).
Answer = tuple

MAX_COPIES = 4
CONTAINER_JSON = re.compile(r"/containers/[^/]+/json")
START = re.compile(r"/containers/([^/]+)/(start|restart)")


def _errno_text(code):
    return os.strerror(code).lower() if code else "unknown error"


# Headers dockerd puts on every answer: an answer of berth's own in its
# place (a copy done by containercopy.py) carries dockerd's.
DAEMON_HEADERS = (b"api-version", b"docker-experimental", b"ostype", b"server")


async def query(upstream_path, target, loads=None, headers=None):
    """dockerd's JSON answer to GET `target`, or None if it answers
    otherwise. Raises apijson.BadBody for a 200 that is not JSON.
    `loads`: an awaitable parse (the user's share of the proxy), else
    apijson.loads on the loop. `headers`: a list given the answer's
    DAEMON_HEADERS."""
    try:
        reader, writer = await asyncio.open_unix_connection(upstream_path)
    except OSError:
        return None
    try:
        writer.write(f"GET {target} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        return None
    if headers is not None:
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() in DAEMON_HEADERS:
                headers.append((name.strip(), value.strip()))
    return apijson.loads(body) if loads is None else await loads(body)


async def remove(upstream_path, container_id):
    """DELETE the container (and its anonymous volumes), as dockerd's own auto-remove does."""
    try:
        reader, writer = await asyncio.open_unix_connection(upstream_path)
    except OSError:
        return
    try:
        writer.write(f"DELETE /containers/{container_id}?force=1&v=1 HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        await reader.read(-1)
    finally:
        writer.close()


class Binds:
    """One user's bind sources, as the proxy handles them."""

    def __init__(self, store, upaths, upstream_path, loads=None):
        self.store = store
        self.upaths = upaths  # the user's run dir: dockerd's record, to find its mount namespace
        self.upstream_path = upstream_path
        self.loads = loads  # dockerd's answers parsed in the user's share of the proxy
        self._sweeping = None
        self._one_at_a_time = asyncio.Lock()  # a user's pinning holds one worker thread at most
        # Held by a start and by a copy dockerd makes of a stopped container
        # whose pins are blanked: no start pins them again meanwhile.
        self.starting = asyncio.Lock()
        # Copies a user's containers run at once (each a fork of the proxy's)
        self.copies = asyncio.Semaphore(MAX_COPIES)
        self.pending = set()  # tokens of creates dockerd has not answered yet: never swept
        self.background = set()  # tasks held: the loop keeps them only weakly

    async def _run(self, fn, *args):
        async with self._one_at_a_time:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _in_dockerds_namespace(self, fn, *args):
        """fn(*args, ns_fd=…) with dockerd's mount namespace, where it will
        look the pins up; OSError (ESRCH) if dockerd is not running: a pin
        made anywhere else would not be dockerd's."""
        rec = record.running(self.upaths)
        if rec is None:
            raise OSError(errno.ESRCH, "your Docker daemon is not running")
        fd = pins.mount_namespace_of(rec.pid)
        if record.running(self.upaths) != rec:  # the pid checked again
            os.close(fd)
            raise OSError(errno.ESRCH, "dockerd restarted while its binds were pinned")
        try:
            return fn(*args, ns_fd=fd)
        finally:
            os.close(fd)

    async def prepare_create(self, host_config):
        """(HostConfig with its Binds made Mounts and every bind source
        pinned, the tokens made) or an Answer. A Binds source that does
        not exist is made as the user, as dockerd would have made it."""
        first_from_binds = len(policy._get(host_config, "Mounts") or [])
        host_config = policy.binds_to_mounts(host_config)
        mounts = policy._get(host_config, "Mounts") or []
        wanted = [(i, str(policy._get(m, "Source") or ""), i >= first_from_binds) for i, m in enumerate(mounts)
                  if isinstance(m, dict) and str(policy._get(m, "Type") or "").casefold() == "bind"]
        if not wanted:
            return host_config, []
        for _, source, _ in wanted:
            if not source.startswith("/"):
                return 400, (f"invalid mount config for type \"bind\": invalid mount path: '{source}' "
                             "mount path must be absolute")
            if "\0" in source or not _encodable(source):
                return 400, f"berth: a bind source that is not a path ({source[:80]!r}); bind a path"
        if len(wanted) > pins.MAX_BINDS:
            return 403, (f"berth: {len(wanted)} bind mounts in one container (at most {pins.MAX_BINDS}); "
                         "bind a directory above them instead")
        if len(self.store.tokens()) + len(wanted) > pins.MAX_PINS:
            return 403, (f"berth: your containers hold {pins.MAX_PINS} bind mounts in all; "
                         "remove containers you no longer need (docker container prune)")
        try:
            results = await self._run(self._in_dockerds_namespace, self.store.pin,
                                      [(source, create) for _, source, create in wanted])
        except OSError as e:
            if e.errno == errno.ESRCH:
                return 502, ("berth: your Docker daemon is not running; log in again to start it, "
                             "or ask your administrator")
            log.warning("%s: binds could not be pinned: %s", self.upaths.user, e)
            return 500, (f"berth: your bind mounts could not be prepared ({e.strerror or e}); "
                         "try again, or ask your administrator")
        made = [self.store.token_of(r.pin) for r in results if r.pin]
        self.pending.update(made)
        for (_, source, _), result in zip(wanted, results):
            answer = _answer_for(source, result.made, result.error)
            if answer is not None:
                await self.created(made, False)
                return answer
        out_mounts = list(mounts)
        for (i, _, _), result in zip(wanted, results):
            out_mounts[i] = {k: v for k, v in mounts[i].items() if k.casefold() != "source"} | {"Source": result.pin}
        out = {k: v for k, v in host_config.items() if k.casefold() != "mounts"}
        out["Mounts"] = out_mounts
        return out, made

    async def before_start(self, container):
        """(the container's id, None) once its pins are in place again as
        the user's rights stand now, or (None, Answer). (None, None): dockerd
        does not know it (its own answer follows). The caller holds
        `starting` until dockerd has answered the start."""
        try:
            info = await query(self.upstream_path, f"/containers/{container}/json", self.loads)
        except apijson.BadBody:
            info = {}
        if info is None:
            return None, None
        container_id = str(policy._get(info, "Id") or "")
        if not re.fullmatch(r"[0-9a-f]{64}", container_id):
            return None, (403, "berth: a container berth cannot read; remove it and create it again")
        # Its mount points: its own binds and those --volumes-from gave it.
        sources = [str(policy._get(m, "Source") or "") for m in (policy._get(info, "Mounts") or [])
                   if isinstance(m, dict) and str(policy._get(m, "Type") or "").casefold() == "bind"]
        tokens = [t for t in map(self.store.token_of, sources) if t]
        foreign = [s for s in sources if self.store.token_of(s) is None]
        if foreign:
            # Made by a berth that gave dockerd the user's own path, which
            # dockerd would look up again as root: not started through berth.
            return None, (403, f"berth: this container binds {foreign[0]} the way berth no longer lets dockerd "
                               "reach it; remove it and create it again (docker rm, then docker run as before)")
        if not tokens:
            return container_id, None
        paths = [self.store.user_path(t) for t in tokens]
        if any(p is None for p in paths):
            return None, (403, "berth: a bind of this container has lost its record; remove it and create it again")
        try:
            results = await self._run(self._in_dockerds_namespace, self.store.pin,
                                      [(p, False) for p in paths], tokens)
        except OSError as e:
            return None, (500, f"berth: your bind mounts could not be prepared ({e.strerror or e}); try again")
        for path, result in zip(paths, results):
            answer = _answer_for(path, False, result.error)
            if answer is not None:
                if policy._get(info, "HostConfig.AutoRemove") is True:
                    # As dockerd removes an auto-remove container that failed
                    # to start: `docker run --rm` waits for that removal.
                    await remove(self.upstream_path, container_id)
                return None, answer
        return container_id, None

    def copy_way(self, info, path):
        """How a `docker cp` of container path `path` goes for a container
        with binds (`info`: dockerd's inspect): ("inside", pid) for a
        running one, done as its root in its namespaces; ("pin", token,
        destination) for a stopped one's path inside a bind, done as the
        user in the pin; ("dockerd", tokens) for any other path of a
        stopped one, which dockerd copies with those pins blanked;
        ("foreign",) for a stopped one with a bind berth holds no pin of
        (made before berth pinned binds): dockerd would copy through it."""
        pid = policy._get(info, "State.Pid")
        if policy._get(info, "State.Running") is True and isinstance(pid, int) and pid > 0:
            return "inside", pid
        binds = [(str(policy._get(m, "Destination") or ""), self.store.token_of(policy._get(m, "Source") or ""))
                 for m in (policy._get(info, "Mounts") or [])
                 if isinstance(m, dict) and str(policy._get(m, "Type") or "").casefold() == "bind"]
        if any(token is None for _, token in binds):
            return ("foreign",)
        wanted = containercopy.absolute(path)
        wanted = wanted[:-2] if wanted.endswith("/.") else wanted
        for dest, token in sorted(binds, key=lambda b: -len(b[0])):
            if token and dest.startswith("/") and containercopy.inside(wanted.rstrip("/") or "/", dest):
                return "pin", token, dest
        return "dockerd", [token for _, token in binds if token]

    async def pin_for_copy(self, token):
        """The pin of `token` mounted again as the user's rights stand now
        (a copy of a stopped container may have left it blanked): None,
        or an Answer."""
        path = self.store.user_path(token)
        if path is None:
            return 403, "berth: a bind of this container has lost its record; remove it and create it again"
        try:
            (result,) = await self._run(self._in_dockerds_namespace, self.store.pin, [(path, False)], [token])
        except OSError as e:
            return 500, f"berth: your bind mounts could not be prepared ({e.strerror or e}); try again"
        return _answer_for(path, False, result.error)

    async def blank_for_copy(self, tokens):
        """Cover a stopped container's pins with blanks (None, or an Answer)."""
        try:
            await self._run(self._in_dockerds_namespace, self.store.blank, tokens)
        except OSError as e:
            return 500, f"berth: your bind mounts could not be set aside for the copy ({e.strerror or e}); try again"
        return None

    def namespace_of_dockerd(self):
        """An open descriptor of dockerd's mount namespace (the caller closes it), or OSError."""
        rec = record.running(self.upaths)
        if rec is None:
            raise OSError(errno.ESRCH, "your Docker daemon is not running")
        return pins.mount_namespace_of(rec.pid)

    def cgroup_procs(self):
        """Where a copy child goes: dockerd's own cgroup, or None."""
        rec = record.running(self.upaths)
        return containercopy.cgroup_procs_of(rec.pid) if rec is not None else None

    def identity(self):
        """(uid, gid, groups) of the user."""
        gid, groups = self.store.identity()
        return self.store.uid, gid, groups

    def answered(self, tokens, ok):
        """dockerd answered the create these tokens were pinned for (201: `ok`)."""
        task = asyncio.ensure_future(self.created(tokens, ok))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def created(self, tokens, ok):
        self.pending.difference_update(tokens)
        if not ok:
            await self.release(tokens)

    async def release(self, tokens):
        if tokens:
            try:
                await self._run(self._in_dockerds_namespace, self.store.release, tokens)
            except OSError as e:
                log.warning("%s: pins not released: %s", self.upaths.user, e)

    def display(self, body):
        return self.store.display(body)

    def has_pins(self):
        return bool(self.store.tokens())

    def sweep_soon(self):
        """Sweep pins whose container is gone, in the background, once at a time."""
        if self._sweeping is not None and not self._sweeping.done():
            return
        if not self.has_pins():
            return
        self._sweeping = asyncio.ensure_future(self.sweep())

    async def sweep(self):
        """Release the pins no container references: of those that existed
        before dockerd was asked, none pinned for a create still under way."""
        before, pending = set(self.store.tokens()), set(self.pending)
        try:
            listing = await query(self.upstream_path, "/containers/json?all=1", self.loads)
        except apijson.BadBody:
            return
        if not isinstance(listing, list):
            return
        referenced = set()
        for c in listing:
            for m in (policy._get(c, "Mounts") or []):
                token = self.store.token_of(policy._get(m, "Source") or "") if isinstance(m, dict) else None
                if token:
                    referenced.add(token)
        stale = sorted(before - referenced - pending - self.pending)
        if stale:
            log.info("%s: %d pin(s) of removed containers released", self.upaths.user, len(stale))
            await self.release(stale)


def _encodable(path):
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _answer_for(path, made, error):
    """`made`: the source was missing and making it was tried (a Binds source)."""
    if not error:
        return None
    if error == errno.ENOENT and not made:
        # dockerd's own words for a --mount source that does not exist
        return 400, f'invalid mount config for type "bind": bind source path does not exist: {path}'
    if error in (errno.EACCES, errno.EPERM):
        if made:
            return 403, (f"berth: a bind of {path}, which does not exist and you may not create; "
                         "bind a path your own account can reach, or create it first")
        return 403, f"berth: a bind of {path}, which your account cannot reach; bind a path your own account can read"
    return 400, f"berth: a bind of {path}: {_errno_text(error)}; bind a path your own account can reach"
