"""The conformance corpus: its file format, HTTP framing of recorded and
replayed bytes, id placeholders, and how two answers are compared.

A scenario file (tests/corpus/scenarios/*.json) is one client doing one
thing: `client`, `command`, `setup`/`teardown` (docker CLI argument lists
run straight against dockerd, unrecorded), and `connections`, each a list of
`exchanges` in the order the client sent them. An exchange holds the
request's raw bytes (`request`, base64, ids replaced by placeholders
{{id:NAME}} of the same length once filled in), bytes sent after a 101
(`raw`; `half_close` if the client then shut its side), when it was sent
(`at`, seconds from the first) and when its answer ended (`done`), or
`cut` if the client hung up on it first; the verdict (`same`, or
`refuse:<what>; <instead>`), which ids its answer names (`binds`:
placeholder -> where in the JSON answer), the `rewrites` berth declares
(REWRITES) and the fields masked when answers are compared (`mask`,
besides MASKED). Hand-written edge cases have the same shape.
"""

import base64
import io
import json
import os
import re
import socket
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(os.path.dirname(HERE), "scenarios")
# The files scenarios name live here, when recorded and when replayed: a
# bind source or compose's working directory is in the request bytes.
FILES_DIR = "/tmp/berth-corpus"
PLACEHOLDER = re.compile(rb"\{\{(id|id12):([A-Za-z0-9_.-]+)\}\}")

# What berth declares it changes on the way to dockerd, by field. Tier 1
# holds a request that reaches upstream to the client's bytes but for these.
REWRITES = {
    "create-keys": "top-level keys of a create body that dockerd ignores are dropped (PortSpecs, name, platform)",
    "binds-as-mounts": "a host path in HostConfig.Binds becomes a HostConfig.Mounts entry of type bind (never "
                       "creating its source); named volumes stay in Binds",
    "bridge-name": "Options of a network create get com.docker.network.bridge.name=<user's bridge>.<hex>",
    "archive-by-id": "the container segment of /containers/NAME/archive becomes the id berth checked",
    "start-by-id": "the container segment of /containers/NAME/start becomes the id berth checked",
    "json-reencoded": "a JSON body berth checks is sent re-encoded, with a Content-Length: the same JSON "
                      "(compared as JSON wherever a body is JSON, so it need not be declared)",
    "host-added": "a request without Host (HTTP/1.0) gets Host: docker; dockerd reads nothing of it",
    "expect-answered": "Expect: 100-continue on a body berth reads is answered by berth and not passed on",
}
# Headers every request to dockerd has as berth's own: one request a
# connection (Connection: close), its body framed again.
HOP_HEADERS = {b"connection", b"keep-alive", b"content-length", b"transfer-encoding"}

# Fields masked when two answers are compared: values that differ between
# two runs of the same request on one dockerd, and why. Anything else that
# differs is a finding.
MASKED = {
    "Id": "a new object's id", "ID": "an id (build aux, image lists)", "id": "a layer id in a progress stream",
    "Created": "creation time", "CreatedAt": "creation time", "StartedAt": "start time",
    "FinishedAt": "finish time", "Status": "\"Up 2 seconds\": a duration", "time": "event time",
    "timeNano": "event time", "Pid": "a process id", "SandboxID": "a network namespace id",
    "SandboxKey": "a network namespace path", "EndpointID": "a network endpoint id",
    "NetworkID": "a network id", "ResolvConfPath": "a path with the container id",
    "HostnamePath": "a path with the container id", "HostsPath": "a path with the container id",
    "LogPath": "a path with the container id", "Hostname": "the container's short id",
    "IPAddress": "an address the pool gave", "MacAddress": "derived from the address",
    "Subnet": "a network's subnet: dockerd's allocator moves on past one just released",
    "IPv4Address": "a container's address on such a network",
    "Gateway": "the gateway of that subnet",
    "read": "stats time", "preread": "stats time", "SystemTime": "the daemon's clock",
    "NEventsListener": "the daemon's listeners", "NFd": "the daemon's descriptors",
    "NGoroutines": "the daemon's goroutines", "mtime": "a file's modification time (docker cp's stat)",
    "SpaceReclaimed": "a size that depends on layers made",
}


BUSYBOX_BIN = "/bin/busybox"
APPLETS = ("sh", "sleep", "echo", "cat", "true", "ls")


def make_files(work):
    """The files scenarios name ({busybox_tar}, {context}, ...)."""
    os.makedirs(work, mode=0o755, exist_ok=True)
    files = {"work": work}
    files["busybox_tar"] = os.path.join(work, "busybox.tar")
    with tarfile.open(files["busybox_tar"], "w") as t:
        t.add(BUSYBOX_BIN, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(info)
        for d in ("tmp", "data"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            t.addfile(info)
    files["tiny_rootfs"] = os.path.join(work, "tiny-rootfs.tar")
    with tarfile.open(files["tiny_rootfs"], "w") as t:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello from the corpus\n"
        info.size, info.mtime = len(data), 1700000000
        t.addfile(info, io.BytesIO(data))
    files["context"] = os.path.join(work, "context")
    os.makedirs(files["context"])
    with open(os.path.join(files["context"], "Dockerfile"), "w") as f:
        f.write("FROM bt-busybox:1\nRUN echo built > /built\n")
    files["payload"] = os.path.join(work, "payload.txt")
    with open(files["payload"], "w") as f:
        f.write("payload\n")
    files["bind_dir"] = os.path.join(work, "bind")
    os.makedirs(files["bind_dir"], mode=0o777)
    files["compose_dir"] = os.path.join(work, "compose")
    os.makedirs(files["compose_dir"])
    with open(os.path.join(files["compose_dir"], "docker-compose.yml"), "w") as f:
        f.write(COMPOSE_FILE)
    files["out"] = os.path.join(work, "out")
    os.makedirs(files["out"])
    return files


COMPOSE_FILE = """version: "2.4"
services:
  app:
    image: bt-busybox:1
    command: sleep 30
    volumes: [data:/data]
    networks: [back]
volumes:
  data: {}
networks:
  back: {}
"""


FILE_NAME = re.compile(r"\{(\w+)\}")


def expand(argv, files):
    """{name} of a corpus file replaced by its path (other braces, a script's, stay)."""
    return [FILE_NAME.sub(lambda m: files.get(m.group(1), m.group(0)), a) for a in argv]


def load(path):
    with open(path) as f:
        return json.load(f)


def scenarios():
    """(name, scenario) for every file in the corpus, in name order."""
    for name in sorted(os.listdir(SCENARIOS)):
        if name.endswith(".json"):
            yield name[:-5], load(os.path.join(SCENARIOS, name))


def b64(data):
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text) if text else b""


# --- filling in ids --------------------------------------------------------------------------------


def fill(data, ids):
    """Placeholders replaced by the ids they stand for (each of its own length)."""
    def one(m):
        value = ids.get(m.group(2).decode())
        if value is None:
            raise KeyError(f"no id yet for {m.group(2).decode()}")
        return value.encode()[:12] if m.group(1) == b"id12" else value.encode()
    return PLACEHOLDER.sub(one, data)


def fake_id(name):
    """A 64-hex id that stands for `name` (tier 1 has no dockerd to make one)."""
    import hashlib
    return hashlib.sha256(name.encode()).hexdigest()


def pick(obj, where):
    """A value in parsed JSON by a path like `Id`, `[0].Id`, `[Names=/x].Id`."""
    for part in re.findall(r"\[[^\]]*\]|[^.\[]+", where):
        if part.startswith("[") and "=" in part:
            key, _, value = part[1:-1].partition("=")
            obj = next(o for o in obj if value == o.get(key) or value in (o.get(key) or ()))
        elif part.startswith("["):
            obj = obj[int(part[1:-1])]
        else:
            obj = obj[part]
    return obj


# --- HTTP framing ------------------------------------------------------------------------------


class Source:
    """Bytes to parse: a recorded stream, or a socket read until a deadline."""

    def __init__(self, data=b"", sock=None, deadline=None):
        self.buf, self.sock, self.deadline, self.eof = bytearray(data), sock, deadline, sock is None

    def more(self):
        if self.eof:
            return False
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.eof = True
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except (socket.timeout, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def line(self):
        while (i := self.buf.find(b"\r\n")) < 0:
            if not self.more():
                return None
        return self.take(i + 2)[:-2]

    def exactly(self, n):
        while len(self.buf) < n and self.more():
            pass
        return self.take(min(n, len(self.buf)))

    def rest(self):
        while self.more():
            pass
        return self.take(len(self.buf))


def read_head(src):
    """(start line, [(name, value)]) or None at the end."""
    first = src.line()
    while first == b"":
        first = src.line()
    if first is None:
        return None
    headers = []
    while (line := src.line()):
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return first, headers


def header(headers, name):
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def read_chunked(src):
    body = bytearray()
    while (size_line := src.line()) is not None:
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            while src.line():  # trailers
                pass
            return bytes(body), True
        body += src.exactly(size)
        src.line()
    return bytes(body), False


def read_request(src):
    """One request from a client's stream: (raw bytes, method, target, headers, body) or None."""
    head = read_head(src)
    if head is None:
        return None
    first, headers = head
    method, target = first.split(b" ")[:2]
    length = header(headers, b"content-length")
    if header(headers, b"transfer-encoding"):
        body, _ = read_chunked(src)
    elif length is not None:
        body = src.exactly(int(length))
    else:
        body = b""
    return method, target, headers, body


def split_requests(data, upgraded_after=None):
    """A client's recorded stream as [(start, end)] byte ranges of its
    requests, and the raw bytes after an upgrade request, if any.
    `upgraded_after(i)`: whether the i-th request's answer was a 101."""
    src, out, pos = Source(data), [], 0
    while src.buf:
        before = len(src.buf)
        if read_request(src) is None:
            break
        end = pos + before - len(src.buf)
        out.append((pos, end))
        pos = end
        if upgraded_after and upgraded_after(len(out) - 1):
            return out, bytes(src.buf)
    return out, bytes(src.buf)


class Response:
    def __init__(self, status, headers, body=b"", complete=True, raw=b""):
        self.status, self.headers, self.body, self.complete, self.raw = status, headers, body, complete, raw

    def get(self, name):
        value = header(self.headers, name.encode())
        return value.decode("latin-1") if value is not None else None

    def __repr__(self):
        return f"<Response {self.status} {self.get('content-type')} {self.body[:200]!r}>"


def read_response(src, method):
    """One response (after any 1xx but 101); a 101's body is the raw stream to the end."""
    while True:
        head = read_head(src)
        if head is None:
            return None
        first, headers = head
        status = int(first.split(b" ")[1])
        if status == 101:
            return Response(status, headers, src.rest(), True)
        if 100 <= status < 200:
            continue
        break
    if method == b"HEAD" or status in (204, 304):
        return Response(status, headers)
    if header(headers, b"transfer-encoding"):
        body, complete = read_chunked(src)
        return Response(status, headers, body, complete)
    length = header(headers, b"content-length")
    if length is not None:
        body = src.exactly(int(length))
        return Response(status, headers, body, len(body) == int(length))
    return Response(status, headers, src.rest(), True)


# --- replaying a scenario ----------------------------------------------------------------------


class Replay:
    """A scenario's connections replayed against one socket, each in a
    thread, every request in the order the client sent it (the next starts
    when this one's answer has begun, or after `patience`). Answers are
    collected per exchange; ids the answers name are bound as they come."""

    def __init__(self, path, scenario, ids=None, budget=20.0, patience=2.0, until=None):
        """`until`: requests sent later than this (seconds) are not sent."""
        self.path, self.scenario, self.budget, self.patience, self.until = path, scenario, budget, patience, until
        self.ids = dict(ids or {})
        order = sorted((ex["at"], ci, ei) for ci, c in enumerate(scenario["connections"])
                       for ei, ex in enumerate(c["exchanges"]))
        self.turn = {(ci, ei): n for n, (_, ci, ei) in enumerate(order)}
        self.started = [threading.Event() for _ in order]
        self.finished = [threading.Event() for _ in order]
        # what each request waited for when recorded: the answers that had ended before it was sent
        exs = [scenario["connections"][ci]["exchanges"][ei] for _, ci, ei in order]
        self.after = [[j for j, other in enumerate(exs) if j != n and other.get("done") is not None
                       and other["done"] <= ex["at"]] for n, ex in enumerate(exs)]
        self.answers = {}
        self.errors = []

    def run(self):
        self.deadline = time.monotonic() + self.budget
        threads = [threading.Thread(target=self._connection, args=(ci, c), daemon=True)
                   for ci, c in enumerate(self.scenario["connections"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.budget + 5)
        return self.answers

    def _wait_turn(self, n):
        for j in self.after[n]:
            self.finished[j].wait(max(0, self.deadline - time.monotonic()))
        if n > 0:
            self.started[n - 1].wait(self.patience)

    def _connection(self, ci, conn):
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(self.path)
            src = Source(sock=sock, deadline=self.deadline)
            for ei, ex in enumerate(conn["exchanges"]):
                n = self.turn[(ci, ei)]
                if self.until is not None and ex["at"] > self.until:
                    return
                self._wait_turn(n)
                try:
                    request = fill(unb64(ex["request"]), self.ids)
                except KeyError as e:
                    self.errors.append(f"{ci}.{ei}: {e}")
                    self.started[n].set()
                    self.finished[n].set()
                    return
                try:
                    sock.sendall(request)
                except OSError as e:
                    self.errors.append(f"{ci}.{ei}: send: {e}")
                src.deadline = min(self.deadline, time.monotonic() + ex.get("wait", self.budget))
                if ex.get("cut"):  # the client hangs up once every other request has had its answer begun
                    src.deadline = self.deadline
                    threading.Thread(target=self._cut, args=(sock, n), daemon=True).start()
                reader = threading.Thread(target=self._answer, args=(src, ex, ci, ei, request), daemon=True)
                reader.start()
                # the next request goes once this answer has begun (its head read), as the client waited
                for _ in range(int(self.patience / 0.005)):
                    if (ci, ei) in self.answers or not reader.is_alive() or getattr(src, "head_seen", False):
                        break
                    time.sleep(0.005)
                try:
                    # what a client sends after a 101 (stdin), after it: dockerd drops bytes sent before
                    if ex.get("raw"):
                        sock.sendall(unb64(ex["raw"]))
                    if ex.get("half_close"):
                        sock.shutdown(socket.SHUT_WR)
                except OSError as e:
                    self.errors.append(f"{ci}.{ei}: send after the answer: {e}")
                self.started[n].set()
                reader.join(max(0, self.deadline - time.monotonic()) + 1)
                self.finished[n].set()
                src.head_seen = False
                if (ci, ei) not in self.answers:
                    return
                if (self.answers[(ci, ei)][-1].get("connection") or "").lower() == "close" and \
                        ei + 1 < len(conn["exchanges"]):
                    # the answer ends the connection: an HTTP client sends what follows on a new one
                    sock.close()
                    sock = socket.socket(socket.AF_UNIX)
                    sock.connect(self.path)
                    src = Source(sock=sock, deadline=self.deadline)
        except OSError as e:
            self.errors.append(f"{ci}: {e}")
        finally:
            sock.close()
            for ei in range(len(conn["exchanges"])):  # nothing waits on what will never be sent
                self.started[self.turn[(ci, ei)]].set()
                self.finished[self.turn[(ci, ei)]].set()

    def _cut(self, sock, n):
        for m, started in enumerate(self.started):
            if m != n:
                started.wait(max(0, self.deadline - time.monotonic()))
        time.sleep(0.2)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _answer(self, src, ex, ci, ei, request):
        method = request.split(b" ", 1)[0]
        original_more = src.more

        def more():
            got = original_more()
            if b"\r\n\r\n" in src.buf:
                src.head_seen = True
            return got
        src.more = more
        answers = []
        try:
            for _ in range(ex.get("responses", 1)):
                answer = read_response(src, method)
                if answer is None:
                    break
                answers.append(answer)
        finally:
            src.more = original_more
        if not answers:
            return
        self.answers[(ci, ei)] = answers
        if answer.status >= 400:
            return  # refused or failed: it named nothing
        for name, where in (ex.get("binds") or {}).items():
            try:
                self.ids[name] = str(pick(json.loads(answer.body), where)).removeprefix("sha256:")
            except (ValueError, KeyError, IndexError, StopIteration, TypeError, AttributeError):
                self.errors.append(f"{ci}.{ei}: no {where} in the answer to bind {name}")


def differences(a, b, path=""):
    """Where two normalised answers differ: [(path, a's value, b's value)]."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path or ".", a, b)]


# --- comparing answers ----------------------------------------------------------------------------


def deframe(body):
    """A multiplexed raw stream ([kind, 0, 0, 0, size32] frames) as {kind: bytes}, or None if it is not one."""
    out, pos = {}, 0
    while pos < len(body):
        if pos + 8 > len(body) or body[pos] not in (0, 1, 2, 3) or body[pos + 1:pos + 4] != b"\0\0\0":
            return None
        size = int.from_bytes(body[pos + 4:pos + 8], "big")
        out[body[pos]] = out.get(body[pos], b"") + body[pos + 8:pos + 8 + size]
        pos += 8 + size
    return out


# Lists whose order is dockerd's map order, compared as sets.
UNORDERED = {"Aliases": "a container's aliases on a network (its short id and its service name)"}


def masked(value, fields):
    if isinstance(value, dict):  # a key can be an id too (a network's Containers)
        return {MASK_TEXT.sub("<id>", k): ("<masked>" if k in fields else
                                           _sorted(masked(v, fields)) if k in UNORDERED else masked(v, fields))
                for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, fields) for v in value]
    if isinstance(value, str):
        return MASK_TEXT.sub("<id>", value)
    return value


# Ids and times inside text (build output, errors naming a container id).
MASK_TEXT = re.compile(r"\b[0-9a-f]{64}\b|\b[0-9a-f]{12}\b|sha256:[0-9a-f]{64}|"
                       r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def _sorted(items):
    return sorted(items, key=lambda v: json.dumps(v, sort_keys=True)) if isinstance(items, list) else items


def normalised(answer, mask=(), body="compare"):
    """What of an answer is compared: status, content type, API version and
    the body, de-framed and with listed fields masked. `body`: "compare",
    "status-only" (a live measurement), or "names" (a tar: its member names)."""
    if answer is None:
        return None
    fields = set(MASKED) | set(mask)
    out = {"status": answer.status, "content-type": answer.get("content-type"),
           "api-version": answer.get("api-version")}
    stat = answer.get("x-docker-container-path-stat")
    if stat:  # docker cp's stat of a path: base64 JSON
        out["path-stat"] = masked(json.loads(base64.b64decode(stat)), fields)
    if body == "status-only" or not answer.body:
        return out
    if body == "names":
        import io
        import tarfile
        try:
            with tarfile.open(fileobj=io.BytesIO(answer.body)) as t:
                out["tar"] = sorted(MASK_TEXT.sub("<id>", n) for n in t.getnames())  # layer and config digests
        except tarfile.TarError:
            out["tar"] = "unreadable"
        return out
    data = answer.body
    frames = deframe(data) if answer.status in (101, 200) else None
    if frames is not None and data:
        out["streams"] = {k: MASK_TEXT.sub("<id>", v.decode("utf-8", "replace")) for k, v in frames.items()}
        return out
    try:
        doc = masked(json.loads(data), fields)
        # a list answer (images, networks, volumes) in dockerd's order, which
        # for objects made in the same second is its map order
        out["json"] = _sorted(doc) if isinstance(doc, list) else doc
        return out
    except ValueError:
        pass
    lines = data.decode("utf-8", "replace").splitlines()
    try:
        out["json-lines"] = [masked(json.loads(line), fields) for line in lines if line.strip()]
    except ValueError:
        out["text"] = MASK_TEXT.sub("<id>", data.decode("utf-8", "replace"))
    return out
