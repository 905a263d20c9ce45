"""Hand-written scenarios: HTTP framings real clients rarely send, and
docker-java's requests, written from its source (Maven Central is out of
reach here, so the client could not be run).

    python tests/corpus/tools/edges.py   # writes tests/corpus/scenarios/edge-*.json, java-*.json
"""

import io
import json
import os
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

BB = "bt-busybox:1"
H = b"Host: docker\r\n"
SLEEPER = [["docker", "run", "-d", "--name", "cps-edge", BB, "sleep", "30"]]
GONE = [["docker", "rm", "-f", "cps-edge"]]


def get(target, version=b"HTTP/1.1", headers=H, method=b"GET"):
    return method + b" " + target + b" " + version + b"\r\n" + headers + b"\r\n"


def post(target, body=b"", headers=H, content_type=b"application/json"):
    return (b"POST " + target + b" HTTP/1.1\r\n" + headers + b"Content-Type: " + content_type + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunks(*parts):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def small_tar():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        info = tarfile.TarInfo("edge.txt")
        data = b"edge\n"
        info.size, info.mtime = len(data), 1700000000
        t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def exchange(request, verdict="same", **kw):
    return {"at": 0, "request": request, "verdict": verdict, **kw}


def scenario(what, *exchanges, client="hand-written HTTP", setup=(), teardown=(), **kw):
    conns = []
    for n, ex in enumerate(exchanges):
        ex = dict(ex, at=n * 0.05)
        ex["request"] = corpus.b64(ex["request"])
        if "raw" in ex:
            ex["raw"] = corpus.b64(ex["raw"])
        conns.append({"exchanges": [ex]})
    return {"client": client, "what": what, "setup": list(setup), "teardown": list(teardown), **kw,
            "connections": conns}


CREATE = b'{"Image": "bt-busybox:1", "Cmd": ["true"]}'
TAR = small_tar()

EDGES = {
    "edge-head-ping": scenario("HEAD /_ping", exchange(get(b"/_ping", method=b"HEAD"))),
    "edge-head-refused": scenario(
        "HEAD on a route berth refuses: headers only", exchange(
            get(b"/v1.41/plugins/x/json", method=b"HEAD"),
            "refuse:the plugins API; plugins and swarm are not for per-user daemons")),
    "edge-head-archive": scenario(
        "HEAD …/archive (docker cp's stat)", exchange(get(b"/v1.41/containers/cps-edge/archive?path=/bin",
                                                          method=b"HEAD")),
        setup=SLEEPER, teardown=GONE, rewrites=["archive-by-id"]),
    "edge-http10-host": scenario("GET /_ping HTTP/1.0 with Host", exchange(get(b"/_ping", b"HTTP/1.0"))),
    "edge-http10-no-host": scenario("GET /_ping and /version HTTP/1.0 without Host (health checks, scripts)",
                                    exchange(get(b"/_ping", b"HTTP/1.0", b""), rewrites=["host-added"]),
                                    exchange(get(b"/v1.41/version", b"HTTP/1.0", b""), rewrites=["host-added"])),
    "edge-expect-create": scenario(
        "Expect: 100-continue on a create body (curl)",
        exchange(post(b"/v1.41/containers/create?name=cps-expect", CREATE, H + b"Expect: 100-continue\r\n"),
                 rewrites=["expect-answered", "json-reencoded"]),
        teardown=[["docker", "rm", "-f", "cps-expect"]]),
    "edge-expect-archive": scenario(
        "Expect: 100-continue on an upload berth relays",
        exchange(b"PUT /v1.41/containers/cps-edge/archive?path=/tmp HTTP/1.1\r\n" + H +
                 b"Content-Type: application/x-tar\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(TAR)
                 + TAR, rewrites=["archive-by-id"]),
        setup=SLEEPER, teardown=GONE),
    "edge-pipelined": scenario(
        "three requests pipelined on one connection",
        exchange(get(b"/_ping") + get(b"/v1.41/version") + get(b"/v1.41/containers/cps-nothing/json"), responses=3)),
    "edge-chunked-create": scenario(
        "a chunked create body",
        exchange(b"POST /v1.41/containers/create?name=cps-chunked HTTP/1.1\r\n" + H +
                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                 chunks(CREATE[:10], CREATE[10:]), rewrites=["json-reencoded"]),
        teardown=[["docker", "rm", "-f", "cps-chunked"]]),
    "edge-chunked-archive": scenario(
        "a chunked upload",
        exchange(b"PUT /v1.41/containers/cps-edge/archive?path=/tmp HTTP/1.1\r\n" + H +
                 b"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n" +
                 chunks(TAR[:1000], TAR[1000:]),
                 rewrites=["archive-by-id"]),
        setup=SLEEPER, teardown=GONE),
    "edge-upgrade-tcp-attach": scenario(
        "attach with Upgrade: tcp",
        exchange(b"POST /v1.41/containers/cps-echo/attach?stream=1&stdout=1&stderr=1&logs=1 HTTP/1.1\r\n" + H +
                 b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n", wait=3),
        setup=[["docker", "run", "-d", "--name", "cps-echo", BB, "sh", "-c", "echo attached; sleep 1"]],
        teardown=[["docker", "rm", "-f", "cps-echo"]]),
    "edge-upgrade-websocket": scenario(
        "attach over a websocket (Upgrade: websocket)",
        exchange(get(b"/v1.41/containers/cps-edge/attach/ws?stream=1&stdout=1",
                     headers=H + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://docker\r\n"),
                 wait=1, mask={"Sec-Websocket-Accept": "follows the key"}),
        setup=SLEEPER, teardown=GONE),
    "edge-upgrade-h2c-grpc": scenario(
        "POST /grpc with Upgrade: h2c (BuildKit)",
        exchange(post(b"/grpc", headers=H + b"Connection: Upgrade\r\nUpgrade: h2c\r\n"), wait=1),
        xfail="BuildKit /session and /grpc: issue 20 part 3 (another helper)"),
    "edge-upgrade-h2c-session": scenario(
        "POST /session with Upgrade: h2c (BuildKit)",
        exchange(post(b"/session", headers=H + b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
                                            b"X-Docker-Expose-Session-Uuid: corpus\r\n"), wait=1),
        xfail="BuildKit /session and /grpc: issue 20 part 3 (another helper)"),
    "edge-long-head": scenario(
        "a 16 KiB head (a long filters query)",
        exchange(get(b"/v1.41/containers/json?all=1&filters=" +
                     b"%7B%22label%22%3A%7B%22" + b"a" * 16000 + b"%22%3Atrue%7D%7D"))),
    "edge-head-over-64k": scenario(
        "a 100 KiB head (dockerd takes up to 1 MiB)",
        exchange(get(b"/v1.41/containers/json?all=1&filters=" +
                     b"%7B%22label%22%3A%7B%22" + b"a" * 100000 + b"%22%3Atrue%7D%7D"),
                 "refuse:a request that is not HTTP/1.1 (a request head over 64 KiB); send what the docker CLI sends",
                 status=400)),
    "edge-encoded-image": scenario(
        "an encoded image name (%2F, %3A), as docker-java and docker-py send them",
        exchange(get(b"/v1.41/images/cps%2Fslashed%3A1/json")),
        setup=[["docker", "tag", BB, "cps/slashed:1"]], teardown=[["docker", "rmi", "cps/slashed:1"]]),
    "edge-encoded-container": scenario(
        "an encoded / in a container segment",
        exchange(get(b"/v1.41/containers/cps%2Fedge/json"),
                 "refuse:GET /containers/cps/edge/json; "
                 "berth passes the Docker API the docker CLI uses, and no other")),
    "edge-form-empty": scenario(
        "an empty form body (curl -d '')",
        exchange(post(b"/v1.41/containers/cps-edge/kill", b"", content_type=b"application/x-www-form-urlencoded")),
        setup=SLEEPER, teardown=GONE),
    "edge-exec-raw": scenario(
        "exec start without Upgrade: a raw stream until close",
        exchange(post(b"/v1.41/exec/{{id:x0}}/start", b'{"Detach": false, "Tty": false}'), wait=3),
        setup=SLEEPER, teardown=GONE, exec_setup={"container": "cps-edge", "cmd": ["echo", "raw"], "bind": "x0"}),
    "edge-options": scenario(
        "OPTIONS (a CORS preflight)",
        exchange(get(b"/_ping", method=b"OPTIONS")), exchange(get(b"/v1.41/containers/json", method=b"OPTIONS"))),
}

# docker-java 3.3.x: CreateContainerCmdImpl's fields in declaration order,
# Jackson without NON_NULL (nulls sent), name in the query; the image's
# "/" percent-encoded by Guava's urlPathSegmentEscaper. Written from the
# source (docker-java-core/.../command/CreateContainerCmdImpl.java), not recorded.
JAVA_CREATE = json.dumps({
    "Hostname": None, "Domainname": None, "User": None, "AttachStdin": None, "AttachStdout": None,
    "AttachStderr": None, "PortSpecs": None, "Tty": None, "OpenStdin": None, "StdinOnce": None, "Env": None,
    "Cmd": ["true"], "Healthcheck": None, "ArgsEscaped": None, "Entrypoint": None, "Image": "cps/java:1",
    "Volumes": {}, "WorkingDir": None, "MacAddress": None, "OnBuild": None, "NetworkDisabled": None,
    "ExposedPorts": {}, "StopSignal": None, "StopTimeout": None, "HostConfig": {"NetworkMode": None},
    "Labels": {"org.testcontainers": "true"}, "Shell": None, "NetworkingConfig": None,
}, separators=(",", ":")).encode()
JAVA_H = b"User-Agent: Apache-HttpClient/5.2 (Java/17)\r\nHost: localhost:2375\r\nAccept: application/json\r\n"
JAVA = {
    "java-create": scenario(
        "createContainerCmd(\"cps/java:1\").withCmd(\"true\").withName(...) (body from the source)",
        exchange(get(b"/v1.32/images/cps%2Fjava:1/json", headers=JAVA_H)),
        exchange(post(b"/v1.32/containers/create?name=cps-java", JAVA_CREATE, JAVA_H),
                 rewrites=["create-keys", "json-reencoded"]),
        client="docker-java 3.3 (written from its source)",
        setup=[["docker", "tag", BB, "cps/java:1"]],
        teardown=[["docker", "rm", "-f", "cps-java"], ["docker", "rmi", "cps/java:1"]]),
}


def main():
    os.makedirs(corpus.SCENARIOS, exist_ok=True)
    for name, s in {**EDGES, **JAVA}.items():
        with open(os.path.join(corpus.SCENARIOS, name + ".json"), "w") as f:
            json.dump(s, f, indent=1)
            f.write("\n")
    print(len(EDGES) + len(JAVA), "hand-written scenarios")


if __name__ == "__main__":
    main()
