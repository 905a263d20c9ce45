"""berth's policy proxy: a user's Docker socket, checked before dockerd sees it.

On asyncio (uvloop where it is installed): the client's requests are
parsed by llhttp (clientside.py) and each head is checked by h11 too, which
frames the answers; dockerd's side is h11 both ways, but for the bodies the
proxy relays. For each request:
- the target is canonicalised (policy.canonical) and the endpoint checked;
- a JSON body of an endpoint the policy reads (container/exec/volume/network
  create) is read whole, chunked or not, up to apijson.MAX_BODY, parsed as
  dockerd parses it, checked, and forwarded re-encoded with a Content-Length
  (a container's Binds as Mounts that never create their source);
- any other body (image load, build context, docker cp) goes through as the
  client sent it, unparsed and spliced in the kernel (splicerelay), on a
  connection to dockerd that carries that request alone (`Connection:
  close`, as every request to dockerd says but an upgrade llhttp itself
  read), so however dockerd reads its framing, nothing after it is a
  request; the connection to the client ends with the answer;
- a refusal is HTTP 403 {"message": "berth: <what>; <instead>"}, and nothing
  of the request reaches dockerd;
- responses stream back; a 101 (attach, exec start) turns the connection
  into a raw byte pipe both ways, with half-close;
- a client that hangs up while its answer is pending is hung up on at
  dockerd too, as dockerd would see its own client go.

This module serves one socket; proxyd runs it for every user as one
host-wide service. Each client connection gets its own upstream
connection, so one user's slow client holds up nobody else.
"""

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import socket
import struct
import time
from email.utils import formatdate

import h11

from berth.proxy import apijson, binds, clientside, containercopy, jobpolicy, pins, policy, refusals, splicerelay
from berth.proxy.share import RAW_CAP, Pool, Share

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # reads from dockerd this big keep large downloads (docker save, cp out) near direct speed
# A stream's buffer (asyncio pauses reading at twice this): the default
# 64 KiB means a read, an epoll wait and a parse per ~100 KiB.
BUFFER = 1 << 20
# The connection to dockerd keeps the kernel's default send buffer: with
# uploads spliced, a forced 1 MiB one measured worse (docs/performance.md).
# A connection that sends no request for this long is closed (the docker
# CLI opens one per command; a script holding hundreds idle would not).
IDLE_TIMEOUT = 600
UPGRADE_THREADS = 2  # relay threads one user's upgrades (BuildKit sessions) may hold; the host has 8
ARCHIVE = re.compile(r"/containers/([^/]+)/archive")
# A route to one container, spelled out: no escape anywhere in the path, so
# what berth checked is what dockerd routes (the query is never looked at).
CONTAINER_ROUTE = re.compile(rb"(/v[0-9]+\.[0-9]+)?/containers/([^/?%]+)/([a-z]+)")
# Upgrades whose raw bytes are spliced both ways, not copied through
# Python: BuildKit's session carries a build's whole context.
SPLICED_UPGRADES = ("/session", "/grpc")
FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")
DRAIN_LIMIT = 1 << 30  # a refused upload is read and dropped up to this, then cut off
REWRITE_LIMIT = 64 << 20  # an answer read whole to show pins as the user's paths (a listing of many containers)
OVER_SHARE = policy.Refusal(f"your requests hold over {RAW_CAP >> 20} MiB of request bodies in the "
                            "proxy at once", "send fewer at once, or wait for the ones under way")


def _parsed_and_checked(raw, method, target, ctx):
    """(the body as dockerd reads it, the policy's refusal or None): run in
    the user's turn (share.py), in a worker thread when the body is big."""
    try:
        body = apijson.loads(raw)
    except apijson.BadBody as e:
        return None, policy.Refusal(str(e), "send the body docker sends")
    return body, policy.check(method, target, body, ctx)


def _refusal_response(conn, status, what, instead, method="GET"):
    return _answer_response(conn, status, f"berth: {what}; {instead}", method)


def _answer_response(conn, status, message, method="GET"):
    """An error answered as dockerd answers one: {"message": ...}; to a
    HEAD, its headers alone (the length still the body's, as HTTP says)."""
    body = apijson.dumps({"message": message})
    head = conn.send(h11.Response(status_code=status, headers=[
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]))
    if method == "HEAD":
        return head + conn.send(h11.EndOfMessage())
    return head + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())


async def _next(conn, reader):
    """The next h11 event from dockerd, reading as needed; ConnectionClosed at EOF."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await reader.read(CHUNK)
        conn.receive_data(data)


def _bad_request(conn, error):
    """A 400 for a request llhttp or h11 would not read, if no answer to it
    has begun: on `conn` where h11 can still answer, else on a fresh one (h11
    answers nothing on a connection whose peer it has found in error)."""
    if conn.our_state is not h11.SEND_RESPONSE:
        if conn.our_state is not h11.IDLE:
            return b""  # an answer is under way: the connection just ends
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: berth\r\n\r\n")
        conn.next_event()
    try:
        return _refusal_response(conn, 400, f"a request that is not HTTP/1.1 ({error})",
                                 "send what the docker CLI sends")
    except h11.LocalProtocolError:
        return b""


def _by_id(head, container_id):
    """`head` with the container named in its path replaced by the id berth
    checked, or a refusal where the path does not spell the route out
    unencoded (dockerd decodes it: its name could be another's then)."""
    path, sep, query = head.target.partition(b"?")
    m = CONTAINER_ROUTE.fullmatch(path)
    if m is None:
        return head, policy.Refusal("an encoded route to a container", "send the container's name or id as it is")
    target = (m[1] or b"") + b"/containers/" + container_id.encode() + b"/" + m[3] + sep + query
    return head._replace(target=target), None


def _go_bool(values):
    """A query flag as dockerd's httputils.BoolValue reads it."""
    value = (values or [""])[0].strip().lower()
    return value not in ("", "0", "no", "false", "none")


def _copy_owner(info):
    """`docker cp -a`'s owner: the container's user where it is numeric,
    else the tar's own ids (dockerd would look a name up on the host)."""
    user = str(policy._get(info, "Config.User") or "")
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (gid == "" or gid.isdigit()):
        return int(uid), int(gid or uid)
    return None


def _form_body(head):
    """A form-encoded body (an empty one, as `curl -d ''` sends, is none: Go reads nothing of it)."""
    return clientside.has_body(head) and any(name.lower() == b"content-type"
                                             and value.split(b";")[0].strip().lower() in FORM_TYPES
               for name, value in head.headers)


def _joined(conn, first):
    """`first` (a Data event) joined with every Data event h11 already has
    parsed behind it, and the next other event (None: more must be read).
    One write and one chunk onward instead of dozens: the docker CLI sends
    its streams in 32 KiB chunks."""
    parts = [first.data]
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            parts.append(event.data)
        else:
            return b"".join(parts) if len(parts) > 1 else parts[0], (None if event is h11.NEED_DATA else event)


def _expects_continue(head):
    return any(name.lower() == b"expect" and value.strip().lower() == b"100-continue" for name, value in head.headers)


def _upstream_headers(head, body_length=None):
    """The request's headers for dockerd: its body framed by the length of
    a re-encoded body, else as the client framed it (a length, or chunks).
    Each request goes on a connection of its own, which says so
    (`Connection: close`): dockerd reads no second request from it, whatever
    it makes of a body's framing. Only a request llhttp read as an upgrade
    (attach, exec start: an Upgrade header and a Connection: upgrade token)
    says `Connection: Upgrade` instead, and it is never relayed: the proxy
    parsed its body, and the connection is a raw stream afterwards."""
    dropped = (b"content-length", b"transfer-encoding", b"connection", b"keep-alive") + \
        (() if head.upgrade else (b"upgrade",)) + \
        ((b"expect",) if body_length is not None else ())  # a body berth read: answered with its 100 already
    out = [(name, value) for name, value in head.headers if name.lower() not in dropped]
    if not any(name.lower() == b"host" for name, _ in out):
        # HTTP/1.0 has none (health checks, shell scripts); the request to
        # dockerd is HTTP/1.1, which must, and dockerd reads nothing of it
        out.append((b"Host", b"docker"))
    out.append((b"Connection", b"Upgrade" if head.upgrade else b"close"))
    if body_length is None and clientside.has_body(head):
        if _chunked(head):
            out.append((b"Transfer-Encoding", b"chunked"))
        else:
            body_length = clientside.content_length(head)
    if body_length is not None:
        out.append((b"Content-Length", str(body_length).encode()))
    return out


def _chunked(head):
    """Whether the client sent its body in chunks (llhttp has checked that
    such a body ends in them), so it goes on in chunks of berth's own."""
    return any(name.lower() == b"transfer-encoding" for name, _ in head.headers)


def _passing_the_end(client, up_writer):
    """What to do when the client ends while its answer is pending: dockerd
    sees what it would have seen of a client of its own socket. Gone
    altogether: the connection goes (dockerd stops a `docker run -d`'s
    wait, a `logs -f`, a body it never read, and the proxy lets go of the
    connection); only done sending: its end of sending, passed on once (it
    may go altogether later)."""
    eof_passed = False

    def ended():
        nonlocal eof_passed
        if up_writer.transport.is_closing():
            return
        if client.gone():
            up_writer.transport.abort()
        elif not eof_passed and up_writer.can_write_eof():
            eof_passed = True
            up_writer.write_eof()
    return ended


_PEERCRED = struct.Struct("3i")


def peer_uid(writer):
    """The uid of the process at the other end of a connection's unix socket."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


class Handler:
    """The client connections to one user's socket.

    `uids`: who may connect (the socket's mode says so too; this holds
    even if the file is ever opened wider). `max_connections`: how many
    one user may hold open at once, on this socket and every other socket
    whose handler was given the same `user_tasks` (a set). `share`: the user's Share (share.py),
    which bounds the memory and CPU their request bodies take. `recent`:
    the user's refusals.Ring, which they read back at refusals.PATH.
    `hold`: a jobpolicy.Hold for a socket whose GPUs are held (a Slurm
    job's, or a Slurm node's login socket). `answer_all`: (status, what,
    instead) for a socket that answers every request so (a Slurm job
    whose user has no daemon here), and passes nothing to dockerd.
    `job_memory`: a jobmemory.JobMemory for a job's socket whose grant
    has no memory limit yet, taken before a create or a start.
    """

    def __init__(self, upstream_path, ctx, user="", uids=None, max_connections=None, share=None, binds=None,
                 recent=None, hold=None, answer_all=None, user_tasks=None, job_memory=None):
        self.upstream_path = upstream_path
        self.share = share if share is not None else Share(Pool())
        self.binds = binds  # binds.Binds: bind sources resolved and pinned as the user
        self.ctx = ctx
        self.user = user
        self.uids = uids
        self.max_connections = max_connections
        self.recent = recent if recent is not None else refusals.Ring()
        self.hold = hold
        self.answer_all = answer_all
        self.job_memory = job_memory
        self.requests = 0
        self.refused = 0
        self.upgrade_threads = 0  # relay threads this user's upgraded connections hold
        # The loop holds tasks weakly: a connection task waiting on its
        # pipes is otherwise garbage-collected mid-stream, and the output
        # of a `docker run` vanishes (asyncio docs, create_task).
        self.tasks = set()
        self.idle = set()  # of them, those waiting for their next request
        self.ending = False  # end_connections: no request more
        self.user_tasks = user_tasks if user_tasks is not None else set()  # this socket's and the user's others'

    def end_connections(self):
        """End every connection open on this socket: a job's socket closed at
        its end must not go on serving one held open from outside the job
        (it would create containers with the job's GPUs, the next job's,
        after the Epilog removed the job's). One waiting for a request ends
        now; one with a request under way once it is answered (a create
        cut off after dockerd got it would still make its container, after
        the Epilog looked). Their tasks, for the caller to wait on and
        cancel those that outlast it."""
        self.ending = True
        for task in self.idle:
            task.cancel()
        return set(self.tasks)

    def _admit(self, writer):
        """A refusal for a connection that may not be served, or None."""
        if self.uids is not None and peer_uid(writer) not in self.uids:
            return 403, "a connection from another user", "use your own socket ($DOCKER_HOST)"
        return self.answer_all

    async def __call__(self, client):
        """Serve one client connection (a clientside.Client, which is also
        the writer its answers go out through)."""
        writer = client
        task = asyncio.current_task()
        if self.max_connections is not None and len(self.user_tasks) >= self.max_connections:
            # Closed before anything is read: idle connections held open
            # would otherwise take the descriptors every user shares.
            self.refused += 1
            log.warning("%s holds %d connections; closed one more at once", self.user or "-", len(self.user_tasks))
            writer.close()
            return
        self.tasks.add(task)
        self.user_tasks.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            refused = self._admit(writer)
            while await self._served(conn, client, writer, refused):
                conn.start_next_cycle()
        except (clientside.BadRequest, h11.RemoteProtocolError) as e:
            answer = _bad_request(conn, e)
            if answer:
                writer.write(answer)
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError) as e:
            log.debug("client connection ended: %s", e)
        except Exception:
            log.exception("%s: a client connection failed", self.user or "-")
        finally:
            writer.close()
            self.tasks.discard(task)
            self.user_tasks.discard(task)

    async def _served(self, conn, client, writer, refused):
        """_one, with what the request holds of the user's share let go of once it is answered."""
        charges = self.share.charges()
        try:
            return await self._one(conn, client, writer, refused, charges)
        finally:
            charges.release()

    async def _one(self, conn, client, writer, refused, charges):
        """Serve one request; True if the connection may carry another.
        `refused`: (status, what, instead) for a connection not admitted."""
        if self.ending:
            return False
        task = asyncio.current_task()
        self.idle.add(task)
        try:
            head = await asyncio.wait_for(client.next(), IDLE_TIMEOUT)
        except asyncio.TimeoutError:
            return False  # idle between requests, or a head never finished
        finally:
            self.idle.discard(task)
        if not isinstance(head, clientside.Head):
            return False
        conn.receive_data(clientside.bodiless_head(head))
        request = conn.next_event()  # h11 checks the head too, and answers it
        if not isinstance(request, h11.Request):
            raise h11.RemoteProtocolError("an incomplete request head", 400)
        conn.next_event()  # its (empty) end
        self.requests += 1
        method, target = request.method.decode(), request.target.decode("latin-1")
        if refused is not None:
            status, what, instead = refused
            # not kept among the user's refusals: the request is someone else's
            self._refuse(writer, conn, method, target, policy.Refusal(what, instead), status, keep=False)
            await self._drain(client)
            return False
        if target.startswith(refusals.PREFIX) and method in ("GET", "HEAD") \
                and target.partition("?")[0] == refusals.PATH:
            return await self._own_refusals(conn, client, writer, head, method)
        found = policy.canonical(target)
        if isinstance(found, policy.Refusal):
            self._refuse(writer, conn, method, target, found)
            await self._drain(client)
            return False
        if _form_body(head):
            # Go's FormValue reads a form body as query parameters, which
            # the policy checks in the target only.
            self._refuse(writer, conn, method, target,
                         policy.Refusal("a form-encoded request body", "send what the docker CLI sends"))
            await self._drain(client)
            return False
        path, _ = found
        body = None
        if policy.reads_body(method, path):
            if _expects_continue(head):
                # The body is berth's to read: the client waits for this
                # before it sends it (curl waits a second, then sends anyway).
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            body, refusal = await self._checked_body(client, charges, method, target)
            if refusal is OVER_SHARE:  # answered at once, and the rest of the body dropped
                self._refuse(writer, conn, method, target, refusal, 429)
                await self._drain(client)
                return False
            if refusal is not None:
                self._refuse(writer, conn, method, target, refusal)
                return False
            if path == "/containers/create":
                body = policy.create_body_for_dockerd(body)
            if self.hold is not None:
                if path == "/containers/create":
                    body, refusal = jobpolicy.create(body, self.hold)
                elif policy.UPDATE_PATH.fullmatch(path):
                    refusal = jobpolicy.update_refusal(body, self.hold)
                if refusal is not None:
                    self._refuse(writer, conn, method, target, refusal)
                    return False
            if path == "/containers/create" and self.job_memory is not None:
                self.job_memory.ensure()  # the container starts held to the job's memory
            if path == "/containers/create" and isinstance(body, dict) and body.field("HostConfig"):
                key = next(k for k in body if k.casefold() == "hostconfig")
                if self.binds is None:
                    body[key] = policy.binds_to_mounts(body[key])
                else:
                    prepared, pinned = await self.binds.prepare_create(body[key])
                    if isinstance(prepared, int):
                        self._answer(writer, conn, method, target, prepared, pinned)
                        return False
                    body[key] = prepared
                    if pinned:
                        return await self._create_with_pins(conn, client, writer, head, body, charges, pinned)
            elif path == "/networks/create" and isinstance(body, dict):
                body = policy.name_bridge(body, self.ctx.bridge, secrets.token_hex(8))
        else:
            refusal = policy.check(method, target, None, self.ctx)
            if refusal is None and policy.asks_buildkit(method, *found):
                refusal = policy.buildkit_refusal(*await self._engine_facts())
            if refusal is None and self.hold is not None and method == "POST" and path in jobpolicy.BUILDS:
                refusal = jobpolicy.build_refusal(await self._engine_fact("/info", "DefaultRuntime"))
            starting = jobpolicy.STARTS.fullmatch(path) if self.hold is not None and method == "POST" else None
            if refusal is None and starting:
                container_id, labels = await self._labels_of(starting[1])
                if not container_id:  # dockerd's own answer, never the request by a name that could move
                    self._answer(writer, conn, method, target, 404, f"No such container: {starting[1]}")
                    await self._drain(client)
                    return False
                refusal = jobpolicy.start_refusal(labels, self.hold)
                if refusal is None and self.job_memory is not None:
                    self.job_memory.ensure()
                if refusal is None:  # by the id that was checked: a name could be given to another meanwhile
                    head, refusal = _by_id(head, container_id)
                    path = f"/containers/{container_id}/{starting[2]}"  # and pins, if any, found by it too
            archive = ARCHIVE.fullmatch(path)
            if refusal is None and archive:
                headers = []
                has_binds, container_id, info = await self._binds_of(archive[1], headers)
                if has_binds and info is not None and self.binds is not None:
                    return await self._copy_with_binds(conn, client, writer, head, method, target, archive[1],
                                                       info, headers, charges)
                if has_binds:
                    refusal = policy.Refusal("docker cp to or from a container with bind mounts (dockerd copies "
                                             "as root on the host, through them)",
                                             "copy through the bound directory itself, or use a container without -v")
                elif container_id:
                    # By the id that was checked: a name could be given to another container meanwhile.
                    head, refusal = _by_id(head, container_id)
                else:
                    # dockerd's own answer, never the request by its name: the
                    # name may be a container with binds by the time dockerd looks.
                    self._answer(writer, conn, method, target, 404, f"No such container: {archive[1]}")
                    await self._drain(client)
                    return False
            if refusal is not None:
                self._refuse(writer, conn, method, target, refusal)
                await self._drain(client)
                return False
            if path in SPLICED_UPGRADES:
                return await self._forward(conn, client, writer, head, None, charges, spliced=True)
            if self.binds is not None:
                return await self._with_binds(conn, client, writer, head, method, target, path, charges)
        return await self._forward(conn, client, writer, head, body, charges)

    async def _with_binds(self, conn, client, writer, head, method, target, path, charges):
        """A request that starts a container (its pins made again, as the
        user, first), removes one (its pins swept after), or shows one (the
        user's paths, not the pins)."""
        start = binds.START.fullmatch(path) if method == "POST" else None
        if start:
            # Held till dockerd answers: a copy of a stopped container blanks its pins meanwhile.
            async with self.binds.starting:
                container_id, answer = await self.binds.before_start(start[1])
                if answer is not None:
                    self._answer(writer, conn, method, target, *answer)
                    await self._drain(client)
                    return False
                if not container_id:  # dockerd's own answer: by its name, it might start one never pinned again
                    self._answer(writer, conn, method, target, 404, f"No such container: {start[1]}")
                    await self._drain(client)
                    return False
                # by the id that was checked: a name could be given to another container meanwhile
                head, refusal = _by_id(head, container_id)
                if refusal is not None:
                    self._refuse(writer, conn, method, target, refusal)
                    await self._drain(client)
                    return False
                return await self._forward(conn, client, writer, head, None, charges)
        elif (method == "DELETE" and path.startswith("/containers/")) or path == "/containers/prune" \
                or (method == "POST" and path.endswith("/wait")):  # `run --rm` waits for its removal
            try:
                return await self._forward(conn, client, writer, head, None, charges)
            finally:
                self.binds.sweep_soon()
        elif method == "GET" and (path in ("/containers/json", "/system/df")
                                  or binds.CONTAINER_JSON.fullmatch(path)) \
                and self.binds.has_pins():
            return await self._forward(conn, client, writer, head, None, charges, rewrite=self.binds.display)
        return await self._forward(conn, client, writer, head, None, charges)

    async def _create_with_pins(self, conn, client, writer, head, body, charges, tokens):
        """Forward a create whose binds are pinned: the pins are kept if
        dockerd made the container, else released."""
        answered = []

        def on_status(status):
            answered.append(status)
            self.binds.answered(tokens, status == 201)
        try:
            return await self._forward(conn, client, writer, head, body, charges, on_status=on_status)
        finally:
            if not answered:  # dockerd never answered (not running, gone mid-way): nothing holds them
                self.binds.answered(tokens, False)

    def _answer(self, writer, conn, method, target, status, message):
        self.refused += 1
        log.info("answered %s: %s %s: %d %s", self.user or "-", method, target[:200], status, message[:200])
        berths = refusals.from_message(message)
        if berths is not None and status < 500:  # berth's refusal, not dockerd's words or a failure
            self.recent.add(time.time(), method, target, status, *berths)
        writer.write(_answer_response(conn, status, message, method))

    async def _own_refusals(self, conn, client, writer, head, method):
        """The user's recent refusals, answered by the proxy itself: their
        socket is theirs (and root's) alone, so the ring is theirs."""
        body = json.dumps(refusals.document(self.recent.to_json(self.user))).encode()
        writer.write(conn.send(h11.Response(status_code=200, headers=[
            ("Content-Type", "application/json"), ("Content-Length", str(len(body)))])))
        if method != "HEAD":
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await self._drain(client)  # a body nobody asked for; and the request's end
        return not clientside.has_body(head) and conn.our_state is h11.DONE

    async def _loads(self, body):
        """dockerd's JSON answer parsed in the user's share: a container's
        inspect is as big as the labels it was made with."""
        return await self.share.work(apijson.loads, (body,), len(body))

    async def _engine_fact(self, target, name):
        """A field of what dockerd says of itself (/version, /info), asked at
        each use: dockerd may have been upgraded or reconfigured since (None
        for what it does not say)."""
        try:
            info = await binds.query(self.upstream_path, target, self._loads)
            return info.field(name) if info is not None else None
        except (apijson.BadBody, AttributeError):
            return None

    async def _engine_facts(self):
        """(API version, cgroup driver) as dockerd says them."""
        return await asyncio.gather(self._engine_fact("/version", "ApiVersion"),
                                    self._engine_fact("/info", "CgroupDriver"))

    async def _labels_of(self, container):
        """(its id, its labels), asked of dockerd; ("", None) if it does
        not know the container, or says something unreadable."""
        try:
            info = await binds.query(self.upstream_path, f"/containers/{container}/json", self._loads)
            container_id = str(info.field("Id") or "") if info is not None else ""
        except (apijson.BadBody, AttributeError):
            return "", None
        if not re.fullmatch(r"[0-9a-f]{64}", container_id):
            return "", None
        return container_id, policy._get(info, "Config.Labels")

    async def _binds_of(self, container, headers=None):
        """(whether the container has a bind mount, its id, its inspect),
        asked of dockerd itself; (False, None, None) if it does not know the
        container (it answers the request that way itself)."""
        try:
            info = await binds.query(self.upstream_path, f"/containers/{container}/json", self._loads,
                                          headers)
            if info is None:
                return False, None, None
            mounts, container_id = info.field("Mounts") or [], str(info.field("Id") or "")
        except (apijson.BadBody, AttributeError):
            return True, None, None  # unreadable: refuse rather than guess
        if not re.fullmatch(r"[0-9a-f]{64}", container_id):
            return True, None, None
        has_binds = any(isinstance(m, dict) and str(m.get("Type", "")).casefold() == "bind" for m in mounts)
        return has_binds, container_id, info

    async def _copy_with_binds(self, conn, client, writer, head, method, target, name, info, headers, charges):
        """`docker cp` on a container with bind mounts: done by berth, as the
        container's root or the user (containercopy.py), or by dockerd
        with the container's pins blanked; never by dockerd through them."""
        container_id = str(info.field("Id"))
        head, refusal = _by_id(head, container_id)
        path = (policy.canonical(target)[1].get("path") or [""])[0]
        if refusal is not None:
            self._refuse(writer, conn, method, target, refusal)
            await self._drain(client)
            return False
        if not path:  # dockerd answers it before it looks at a file
            return await self._forward(conn, client, writer, head, None, charges)
        way = self.binds.copy_way(info, path)
        if way[0] == "foreign":
            self._refuse(writer, conn, method, target, policy.Refusal(
                "docker cp on a stopped container whose binds dockerd would copy through as root (it was made "
                "before berth pinned binds)", "start it first, or remove it and create it again"))
            await self._drain(client)
            return False
        if way[0] == "dockerd":
            return await self._copy_by_dockerd(conn, client, writer, head, method, target, container_id, charges)
        async with self.binds.copies:
            return await self._copy_in_child(conn, client, writer, head, method, target, name, info, headers,
                                             path, way)

    async def _copy_in_child(self, conn, client, writer, head, method, target, name, info, headers, path, way):
        """A copy done by a child of berth's (containercopy.py), as the container's root or the user."""
        container_id = str(info.field("Id"))
        query = policy.canonical(target)[1]
        request = {"op": {"HEAD": "stat", "GET": "get", "PUT": "put"}[method], "path": path, "name": name,
                   "no_overwrite": _go_bool(query.get("noOverwriteDirNonDir")),
                   "owner": _copy_owner(info) if _go_bool(query.get("copyUIDGID")) else None,
                   "mounts": [(str(m.get("Destination", "")), m.get("RW") is not False)
                              for m in (info.field("Mounts") or []) if isinstance(m, dict)],
                   "readonly_rootfs": info.field("HostConfig") is not None
                   and policy._get(info, "HostConfig.ReadonlyRootfs") is True}
        try:
            if way[0] == "inside":
                fds = containercopy.container_fds(way[1], container_id)
                enter, args = containercopy.enter_container, fds
            else:
                _, token, dest = way
                answer = await self.binds.pin_for_copy(token)
                if answer is not None:
                    self._answer(writer, conn, method, target, *answer)
                    await self._drain(client)
                    return False
                fds = (self.binds.namespace_of_dockerd(),)
                enter, args = containercopy.enter_pin, (fds[0], self.binds.store.pin_path(token),
                                                         *self.binds.identity())
                wanted = containercopy.absolute(path)
                request["local"] = "/" + wanted[len(dest):].lstrip("/") if wanted != dest else "/"
                if not os.path.isdir(self.binds.store.pin_path(token)):  # a bind of one file
                    request["local"] = containercopy.FILE_PIN + request["local"].rstrip("/")
                request["shown"] = dest
        except OSError as e:
            log.warning("%s: a copy could not start: %s", self.user or "-", e)
            self._answer(writer, conn, method, target, 500,
                         "berth: the copy could not be prepared (the container stopped meanwhile?); try again")
            await self._drain(client)
            return False
        try:
            pid, sock = containercopy.spawn(enter, args, request, keep=set(fds),
                                            cgroup_procs=self.binds.cgroup_procs())
        finally:
            for fd in fds:
                os.close(fd)
        try:
            return await self._copy_answer(conn, client, writer, head, method, sock, headers, pid)
        finally:
            sock.close()
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    os.kill(pid, signal.SIGKILL)  # a client gone mid-copy: its child goes too
                    pins._reap_later(pid)
            except ChildProcessError:
                pass  # reaped by _copy_answer

    async def _copy_by_dockerd(self, conn, client, writer, head, method, target, container_id, charges):
        """A stopped container's path outside its binds: dockerd copies it
        with the pins blanked (no start through berth pins them till
        dockerd answers, and dockerd's own start waits for the copy), and
        they are pinned again after, as the user, for a later start."""
        lock = self.binds.starting
        await lock.acquire()
        held = [True]

        def answered(status):
            # dockerd answers with the container's own lock taken (it holds
            # it till the copy ends): a start waits for that in dockerd.
            if held[0]:
                held[0] = False
                lock.release()
        try:
            info = await binds.query(self.upstream_path, f"/containers/{container_id}/json", self._loads)
            way = self.binds.copy_way(info, "/") if info is not None else ("dockerd", [])
            if way[0] != "dockerd" or policy._get(info, "State.Restarting") is True:
                self._answer(writer, conn, method, target, 409,
                             "berth: the container started while its files were being copied; try again")
                await self._drain(client)
                return False
            answer = await self.binds.blank_for_copy(way[1])
            if answer is not None:
                self._answer(writer, conn, method, target, *answer)
                await self._drain(client)
                return False
            try:
                return await self._forward(conn, client, writer, head, None, charges, on_status=answered)
            finally:
                for token in way[1]:
                    await self.binds.pin_for_copy(token)
        finally:
            answered(None)

    async def _copy_answer(self, conn, client, writer, head, method, sock, daemon_headers, pid):
        """Relay a copy child's answer as dockerd's (containercopy's protocol)."""
        reader, to_child = await asyncio.open_unix_connection(sock=sock, limit=BUFFER)
        try:
            return await self._relay_copy(conn, client, writer, head, method, reader, to_child, daemon_headers, pid)
        finally:
            # Closed here, not left to the garbage collector: there the socket
            # object's finalizer may close the descriptor before the loop's
            # handle does, and the loop's later close then takes whatever a
            # worker thread opened meanwhile under that number (a pin's pipe).
            # Closing the transport detaches the socket: one close, now.
            to_child.transport.abort()

    async def _relay_copy(self, conn, client, writer, head, method, reader, to_child, daemon_headers, pid):
        pump = None
        line_task = asyncio.ensure_future(reader.readline())
        if method == "PUT":
            if _expects_continue(head):
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            pump = asyncio.ensure_future(self._body_to(client, to_child))
            await asyncio.wait({line_task, pump}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done() and not line_task.done() and pump.result() is False:
                line_task.cancel()  # the client went mid-body: so does the copy (the caller kills its child)
                writer.transport.abort()
                return False
        try:
            line = await line_task
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
        try:
            answer = json.loads(line)
        except ValueError:
            answer = {"status": 500, "message": "berth: the copy failed; try again, or ask your administrator"}
        if pump is not None and not (pump.done() and not pump.cancelled() and pump.result()):
            await self._drain(client)
        headers = [*daemon_headers, (b"Date", formatdate(usegmt=True).encode()), (b"Connection", b"close")]
        status = int(answer.get("status", 500))
        if status != 200:
            body = apijson.dumps({"message": str(answer.get("message", ""))})
            headers += [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            if method != "HEAD":
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            return False
        if "stat" in answer:
            headers.append((b"X-Docker-Container-Path-Stat", containercopy.stat_header(answer["stat"]).encode()))
        if method == "GET":
            headers.append((b"Content-Type", b"application/x-tar"))
        elif method == "PUT":
            headers.append((b"Content-Length", b"0"))  # a HEAD's, as dockerd's, says neither (chunked)
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        if method == "GET":
            while data := await reader.read(CHUNK):
                writer.write(conn.send(h11.Data(data=data)))
                await writer.drain()
            status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
            if status[1] != 0:  # the tar ended short: so does the answer, unfinished
                log.info("%s: a copy out of a container ended short", self.user or "-")
                writer.transport.abort()
                return False
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return False

    async def _body_to(self, client, out):
        """The request's body, as llhttp de-framed it, to a copy child: True once whole."""
        try:
            while True:
                event = await client.next()
                if isinstance(event, list):
                    out.writelines(event)
                    await out.drain()
                elif event is client.END:
                    out.write_eof()
                    return True
                else:
                    return False
        except ConnectionError:
            return False

    def _refuse(self, writer, conn, method, target, refusal, status=403, keep=True):
        self.refused += 1
        # The admin's record of who tried what (the target, cut short: it is the user's text).
        log.info("refused %s: %s %s: %s", self.user or "-", method, target[:200], refusal.what)
        if keep:  # the user's, to read back when their client hides the answer
            self.recent.add(time.time(), method, target, status, refusal.what, refusal.instead)
        writer.write(_refusal_response(conn, status, refusal.what, refusal.instead, method))

    async def _drain(self, client, limit=DRAIN_LIMIT):
        """Read and drop the rest of a refused request's body (up to `limit`):
        a client still sending it (a build context) would otherwise hit a
        closed socket before reading the refusal."""
        size = 0
        while size <= limit:
            event = await client.next()
            if not isinstance(event, list):
                return
            size += sum(map(len, event))

    async def _checked_body(self, client, charges, method, target):
        """(the body, parsed as dockerd parses it, a refusal or None): read
        whole and parsed and checked in the user's share (share.py)."""
        raw, refusal = await self._read_body(client, charges)
        if refusal is not None:
            return None, refusal
        return await charges.parse(_parsed_and_checked, raw, method, target, self.ctx)

    async def _read_body(self, client, charges):
        chunks, size = [], 0
        while True:
            event = await client.next()
            if isinstance(event, list):
                piece = sum(map(len, event))
                size += piece
                # each piece held is an object of its own: 1 MiB in 1-byte chunks is a million
                if size <= apijson.MAX_BODY and not charges.hold(piece + clientside.PIECE_OVERHEAD * len(event)):
                    return None, OVER_SHARE
                if size > apijson.MAX_BODY:
                    await self._drain(client)  # so the client reads the refusal, not a reset
                    return None, policy.Refusal(f"a request body over {apijson.MAX_BODY // 1024} KiB",
                                                "send a smaller one")
                chunks.extend(event)
            elif event is client.END:
                return b"".join(chunks), None
            else:
                return None, policy.Refusal("an incomplete request", "send it whole")

    async def _forward(self, conn, client, writer, head, body, charges, on_status=None, rewrite=None,
                       spliced=False):
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream_path, limit=BUFFER)
        except OSError as e:
            log.warning("%s's dockerd does not answer at %s: %s", self.user or "-", self.upstream_path, e)
            writer.write(_refusal_response(conn, 502, "your Docker daemon is not running",
                                           "log in again to start it, or ask your administrator",
                                           head.method.decode("latin-1")))
            return False
        up = h11.Connection(h11.CLIENT)
        try:
            encoded = None if body is None else await charges.encode(apijson.dumps, body)
            up_writer.write(up.send(h11.Request(method=head.method, target=head.target,
                                                headers=_upstream_headers(head, None if encoded is None
                                                                          else len(encoded)))))
            if encoded is not None:
                up_writer.write(up.send(h11.Data(data=encoded)) + up.send(h11.EndOfMessage()))
            elif clientside.has_body(head) and not head.upgrade and (held := client.relay_body()) is not None:
                return await self._relayed(conn, client, writer, up, up_reader, up_writer, held)
            else:
                await self._stream_request(client, up, up_writer, chunked=_chunked(head))
            await up_writer.drain()

            client.on_end(_passing_the_end(client, up_writer))
            try:
                if rewrite is not None:
                    return await self._rewritten_response(conn, writer, up, up_reader, rewrite)
                return await self._stream_response(conn, client, writer, up, up_reader, up_writer,
                                                   on_status=on_status, spliced=spliced)
            finally:
                client.on_end(None)
        finally:
            up_writer.close()

    async def _relayed(self, conn, client, writer, up, up_reader, up_writer, held):
        """A body the policy does not read (an image, a build context, a
        `docker cp` archive) goes to dockerd as the client sent it: the
        bytes read with its head, then the rest spliced in the kernel
        (splicerelay), while dockerd's answer streams back. The connection
        ends with the answer."""
        up_writer.transport.set_write_buffer_limits(high=0)  # drained: all of it is in the kernel
        if held:
            up_writer.write(held)
        await up_writer.drain()  # before the relay writes past the transport
        client_ended = _passing_the_end(client, up_writer)

        def ended(error):
            if isinstance(error, splicerelay.DockerdGone):  # its answer is read to its end meanwhile
                log.debug("%s: dockerd stopped taking a relayed body: %s", self.user or "-", error)
            elif error is not None:
                log.debug("%s: a relayed body ended short: %s", self.user or "-", error)
                up_writer.transport.abort()  # dockerd sees the body cut short, as it would have directly
            else:
                client_ended()

        client_sock, up_sock = client.get_extra_info("socket"), up_writer.get_extra_info("socket")
        if client.transport.is_closing() or up_writer.transport.is_closing() or client_sock is None \
                or up_sock is None:
            return False  # the client went away (or dockerd did) before its body
        try:
            relay = splicerelay.Relay(asyncio.get_running_loop(), client_sock.fileno(), up_sock.fileno(), ended)
        except OSError as e:
            log.debug("%s: no relay for a body: %s", self.user or "-", e)
            return False
        try:
            client.on_end(client_ended)  # the client's reading is paused: its hangup is watched apart
            await self._stream_response(conn, client, writer, up, up_reader, up_writer, relayed=True)
        finally:
            client.on_end(None)
            relay.close()
        return False

    async def _stream_request(self, client, up, up_writer, chunked):
        """A body llhttp has already parsed (a request pipelined behind
        another's body), framed anew: a chunked one as one chunk for each
        batch of pieces, written here, because h11 would frame each piece
        with a call of its own or join them first; one the client gave a
        Content-Length through h11, which holds it to that length. h11 ends
        it either way."""
        while True:
            event = await client.next()
            if isinstance(event, list):
                if chunked:
                    up_writer.writelines([b"%x\r\n" % sum(map(len, event)), *event, b"\r\n"])
                else:
                    for piece in event:
                        up_writer.writelines(up.send_with_data_passthrough(h11.Data(data=piece)))
                await up_writer.drain()
            elif event is client.END:
                up_writer.write(up.send(h11.EndOfMessage()))
                return
            else:
                raise ConnectionError("the client went away mid-request")

    async def _rewritten_response(self, conn, writer, up, up_reader, rewrite):
        """dockerd's whole answer, read, passed through `rewrite` if it is a
        200, and sent with its new length (a container's inspect: small)."""
        response, parts, size = None, [], 0
        while True:
            event = await _next(up, up_reader)
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                parts.append(event.data)
                size += len(event.data)
                if size > REWRITE_LIMIT:
                    return False  # no inspect is this big; the connection just ends
            elif isinstance(event, h11.EndOfMessage) and response is not None:
                break
            else:
                return False
        body = b"".join(parts)
        if response.status_code == 200:
            body = rewrite(body)
        headers = [(name, value) for name, value in response.headers
                   if name.lower() not in (b"connection", b"content-length", b"transfer-encoding")]
        headers.append((b"Content-Length", str(len(body)).encode()))
        writer.write(conn.send(h11.Response(status_code=response.status_code, headers=headers,
                                            reason=response.reason)))
        writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _stream_response(self, conn, client, writer, up, up_reader, up_writer, relayed=False,
                               on_status=None, spliced=False):
        pending = None
        while True:
            event, pending = pending or await _next(up, up_reader), None
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101 and relayed:
                return False  # no route with a body the policy does not read switches protocols
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=event.headers,
                                                                 reason=event.reason)))
                await writer.drain()
                client.take_raw()
                if spliced and await self._spliced(client, writer, up, up_writer):
                    return False
                await self._pipe(client, writer, up, up_reader, up_writer)
                return False
            if isinstance(event, h11.InformationalResponse):  # 100 Continue and the like: passed on as they are
                writer.write(conn.send(h11.InformationalResponse(status_code=event.status_code,
                                                                 headers=event.headers, reason=event.reason)))
            elif isinstance(event, h11.Response):
                if on_status is not None:
                    on_status(event.status_code)
                # dockerd's `Connection: close` answers berth's own: the client's
                # connection is kept open or closed by h11 as the client asked,
                # and closed after a relayed body.
                headers = [(name, value) for name, value in event.headers if name.lower() != b"connection"]
                if relayed:
                    headers.append((b"Connection", b"close"))
                writer.write(conn.send(h11.Response(status_code=event.status_code, headers=headers,
                                                    reason=event.reason)))
            elif isinstance(event, h11.Data):
                data, pending = _joined(up, event)
                writer.write(conn.send(h11.Data(data=data)))
                await writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                return conn.our_state is h11.DONE and conn.their_state is h11.DONE
            else:
                return False

    async def _spliced(self, client, writer, up, up_writer):
        """Raw bytes both ways after a 101, spliced in the kernel
        (splicerelay), each direction half-closed on its own EOF, and both
        cut at an error on either. For BuildKit's session, which carries a
        build's whole context: copied through Python, 200 MiB took the
        proxy 350 ms of CPU. False if the client's bytes are not all raw
        yet (an upgrade request's body still being read)."""
        rest = client.detach_raw()
        if rest is None:
            return False
        up_writer.transport.pause_reading()
        daemon_rest, _ = up.trailing_data
        if daemon_rest:
            writer.write(daemon_rest)
        if rest:
            up_writer.write(rest)
        await asyncio.gather(writer.drain(), up_writer.drain())  # all in the kernel before the relays write
        client_sock, up_sock = client.get_extra_info("socket"), up_writer.get_extra_info("socket")
        if client_sock is None or up_sock is None or client.transport.is_closing() \
                or up_writer.transport.is_closing():
            return True  # one side went away meanwhile: the connection ends
        loop = asyncio.get_running_loop()
        ends = [loop.create_future(), loop.create_future()]

        def ended(done, eof):
            def on(error):
                if error is None:
                    eof()  # this direction's end, passed on; the other goes on
                else:
                    log.debug("%s: an upgraded connection ended short: %s", self.user or "-", error)
                    for end in ends:  # either side failing ends both, as a closed connection would
                        if not end.done():
                            end.set_result(None)
                if not done.done():
                    done.set_result(None)
            return on

        relays = []
        # An upgrade may idle for as long as its client likes: a user's take
        # of the host's relay threads is bounded, past it the loop drives.
        thread = self.upgrade_threads < UPGRADE_THREADS
        try:
            relays.append(splicerelay.Relay(loop, client_sock.fileno(), up_sock.fileno(),
                                            ended(ends[0], up_writer.write_eof), thread=thread))
            relays.append(splicerelay.Relay(loop, up_sock.fileno(), client_sock.fileno(),
                                            ended(ends[1], writer.write_eof), thread=thread))
            held = sum(isinstance(r, splicerelay.ThreadRelay) for r in relays)
            self.upgrade_threads += held
            try:
                await asyncio.gather(*ends)
            finally:
                self.upgrade_threads -= held
        except OSError as e:
            log.debug("%s: no relay for an upgraded connection: %s", self.user or "-", e)
        finally:
            for relay in relays:
                relay.close()
        return True

    async def _pipe(self, client, writer, up, up_reader, up_writer):
        """Raw bytes both ways after a 101, each direction half-closed on its own EOF."""
        daemon_rest, _ = up.trailing_data
        if daemon_rest:
            writer.write(daemon_rest)

        async def pump(read, dst):
            try:
                while data := await read():
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                # a reset ends that direction too: dockerd closing an attach
                # with stdin unread resets it, and its client must still see
                # the end (on dockerd's own socket it would)
                pass
            try:
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, RuntimeError):
                pass  # that side is gone already (uvloop says so with a RuntimeError)

        await asyncio.gather(pump(client.read_raw, up_writer), pump(lambda: up_reader.read(CHUNK), writer))


async def serve_socket(handler, sock):
    """Serve a listening unix socket with `handler`."""
    return await asyncio.get_running_loop().create_unix_server(lambda: clientside.Client(handler), sock=sock)
