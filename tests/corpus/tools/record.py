"""Record the conformance corpus from real clients, against a plain dockerd.

    flock /tmp/berth-integration.lock python tests/corpus/tools/record.py [--only NAME-PREFIX]

Starts a dockerd of its own (data-root, exec-root, pidfile and socket under
a temp dir; no bridge, no iptables; its own containerd), imports busybox,
and for each scenario runs its setup straight against dockerd, the
client's commands through the recording socket (recorder.py), then its
teardown. Each scenario becomes tests/corpus/scenarios/<name>.json
(corpus.py has the format); the hand-written HTTP edge cases come from
edges.py. Clients: Debian's docker CLI (/usr/bin/docker), the one in
/usr/local/bin, docker-compose, and, where they are installed (see
--py/--node), the Docker SDK for Python, testcontainers (PyPI and npm) and
dockerode. Nothing here runs in CI: CI replays what this wrote.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
import recorder  # noqa: E402
from scenarios import ALL  # noqa: E402


def unmount_below(root):
    """What dockerd leaves mounted in its exec-root (netns/default), deepest first."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(root + "/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], check=True)


def version_of(argv):
    out = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    return out.splitlines()[0] if out else "?"


class Dockerd:
    """A plain dockerd under `root`, stopped by its pid."""

    def __init__(self, root, bridge=None):
        self.root, self.bridge = root, bridge
        if bridge:  # testcontainers-node asks for the "bridge" network before anything
            subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", bridge], check=True)
        self.sock = os.path.join(root, "docker.sock")
        self.log = open(os.path.join(root, "dockerd.log"), "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", os.path.join(root, "data"), "--exec-root", os.path.join(root, "x"),
             "--pidfile", os.path.join(root, "dockerd.pid"), "-H", f"unix://{self.sock}",
             f"--bridge={bridge or 'none'}", "--iptables=false", "--ip-masq=false", "--ip-forward=false"],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if subprocess.run(["docker", "-H", f"unix://{self.sock}", "version"], capture_output=True).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("dockerd did not start: see " + self.log.name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], check=True)


def expand(argv, files):
    return corpus.expand(argv, files)


def run_direct(argv, sock, files, env):
    """A setup or teardown step, straight against dockerd: docker CLI
    argument lists go to /usr/local/bin's docker, or the named program."""
    argv = expand(argv, files)
    if argv[0] == "docker":
        argv = [next(c for c in ("/usr/local/bin/docker", "/usr/bin/docker") if os.path.exists(c)), *argv[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env=dict(env, DOCKER_HOST=f"unix://{sock}"), cwd=files["work"])


def record(scenario, dockerd, files, env, listen):
    for step in scenario.get("setup", ()):
        r = run_direct(step, dockerd.sock, files, env)
        if r.returncode != 0:
            print(f"  setup {step}: {r.stderr.strip()}", file=sys.stderr)
    outputs = []
    with recorder.Recorder(listen, dockerd.sock) as rec:
        for command in scenario["commands"]:
            argv = expand(command, files)
            r = subprocess.run(argv, capture_output=True, timeout=120, cwd=files["work"],
                               input=scenario.get("stdin", "").encode(),
                               env=dict(env, DOCKER_HOST=f"unix://{listen}", **scenario.get("env", {})))
            outputs.append({"argv": command, "exit": r.returncode,
                            "stderr": r.stderr.decode("utf-8", "replace")[-400:]})
        time.sleep(scenario.get("linger", 0.3))
        rec.close(grace=2.0)
    for step in scenario.get("teardown", ()):
        run_direct(step, dockerd.sock, files, env)
    return rec.connections, outputs


ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


def ids_in(obj, path=""):
    """(id, where) for every 64-hex id in a parsed JSON answer."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from ids_in(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            sel = f"[{i}]"
            if isinstance(v, dict) and isinstance(v.get("Names"), list) and v["Names"]:
                sel = f"[Names={v['Names'][0]}]"
            elif isinstance(v, dict) and isinstance(v.get("RepoTags"), list) and v["RepoTags"]:
                sel = f"[RepoTags={v['RepoTags'][0]}]"
            elif isinstance(v, dict) and isinstance(v.get("Name"), str) and v["Name"]:
                sel = f"[Name={v['Name']}]"
            yield from ids_in(v, path + sel)
    elif isinstance(obj, str) and (m := ID.fullmatch(obj)):
        yield m.group(1), path


def to_scenario(name, spec, connections, outputs, t0):
    """A recording made into the corpus's form, ids as placeholders."""
    exchanges = []  # (at, ci, ei, exchange dict, raw request, answer)
    for ci, conn in enumerate(connections):
        sent = b"".join(d for _, d in conn.sent)
        answered = b"".join(d for _, d in conn.answered)
        times = []  # offset -> time of the piece holding it
        pos = 0
        for t, d in conn.sent:
            times.append((pos, t))
            pos += len(d)
        ended = next((t for t, d in conn.sent if d == b""), None)
        answer_end = max((t for t, d in conn.answered if d), default=None)  # its last byte, not its end
        answer_times = []  # offset in the answers -> time of the piece ending there
        pos = 0
        for t, d in conn.answered:
            pos += len(d)
            answer_times.append((pos, t))
        src, answers = corpus.Source(sent), corpus.Source(answered)
        offset = 0
        for ei in range(1000):
            before = len(src.buf)
            req = corpus.read_request(src)
            if req is None:
                break
            raw = sent[offset:offset + before - len(src.buf)]
            at = max(t for p, t in times if p <= offset) - t0
            offset += before - len(src.buf)
            answer = corpus.read_response(answers, req[0])
            ex = {"at": round(at, 4), "request": raw}
            read = len(answered) - len(answers.buf)
            done = min((t for p, t in answer_times if p >= read), default=None)
            if answer is not None and answer.status != 101 and ended is not None and answer_end is not None \
                    and ended < answer_end and not src.buf:
                ex["cut"] = True  # the client hung up on an answer still streaming (run -d's wait)
            elif answer is not None and done is not None:
                ex["done"] = round(done - t0, 4)  # its answer's last byte: what came later waited for it
            if answer is not None and answer.status == 101:
                ex["raw"] = bytes(src.buf)
                src.buf.clear()
                if ended is not None and answer_end is not None and ended < answer_end:
                    ex["half_close"] = True
            exchanges.append((at, ci, ei, ex, answer))
            if answer is None:
                break
    exchanges.sort(key=lambda e: e[0])
    # ids the answers name, as placeholders in every later request
    known = {}
    for _, _, _, ex, answer in exchanges:
        for full, p in sorted(known.items(), key=lambda kv: -len(kv[0])):
            ex["request"] = ex["request"].replace(full.encode(), b"{{id:%s}}" % p.encode())
            ex["request"] = ex["request"].replace(full[:12].encode(), b"{{id12:%s}}" % p.encode())
            if "raw" in ex:
                ex["raw"] = ex["raw"].replace(full.encode(), b"{{id:%s}}" % p.encode())
        if answer is None or not answer.body:
            continue
        try:
            parsed = json.loads(answer.body)
        except ValueError:
            continue
        for value, where in ids_in(parsed):
            if value not in known:
                known[value] = f"x{len(known)}"
                ex.setdefault("binds", {})[known[value]] = where
    # a placeholder no request uses needs no binding
    used = set()
    for _, _, _, ex, _ in exchanges:
        used |= {m.group(2).decode() for m in corpus.PLACEHOLDER.finditer(ex["request"])}
    for _, _, _, ex, answer in exchanges:
        if "binds" in ex:
            ex["binds"] = {k: v for k, v in ex["binds"].items() if k in used} or None
            if not ex["binds"]:
                del ex["binds"]
        ex["recorded_status"] = answer.status if answer is not None else None
        verdict = spec.get("verdicts", {}).get(_request_line(ex["request"]))
        ex["verdict"] = verdict or "same"
        ex["request"] = corpus.b64(ex["request"])
        if "raw" in ex:
            ex["raw"] = corpus.b64(ex["raw"])
    conns = [{"exchanges": [ex for _, c, _, ex, _ in sorted(exchanges, key=lambda e: (e[1], e[2])) if c == ci]}
             for ci in range(len(connections))]
    conns = [c for c in conns if c["exchanges"]]
    out = {}
    out["commands"] = [o["argv"] for o in outputs]
    out["recorded_exits"] = [o["exit"] for o in outputs]
    out.update({k: spec[k] for k in DECLARED if k in spec})
    out["connections"] = conns
    return out


def _request_line(raw):
    """`METHOD /path` of a request, without the version prefix and query: verdicts are keyed so."""
    line = raw.split(b"\r\n", 1)[0].decode("latin-1")
    method, target = line.split(" ")[:2]
    path = re.sub(r"^/v[0-9.]+", "", target.split("?")[0])
    return f"{method} {path}"


DECLARED = ("client", "what", "setup", "teardown", "xfail", "mask", "body", "env", "stdin", "rewrites", "budget")
ORDER = ("client", "what", "client_version", "commands", "recorded_exits", "setup", "teardown", "env", "stdin",
         "xfail", "rewrites", "mask", "body", "budget", "connections")


def ordered(scenario):
    """Keys in one order, so that a file changes only where its content does."""
    return {k: scenario[k] for k in ORDER if k in scenario} | scenario


def redeclare(only):
    for name, spec in ALL.items():
        path = os.path.join(corpus.SCENARIOS, name + ".json")
        if not name.startswith(tuple(only.split(","))) or not os.path.exists(path):
            continue
        scenario = corpus.load(path)
        for key in DECLARED:
            scenario.pop(key, None)
        scenario.update({k: spec[k] for k in DECLARED if k in spec})
        for conn in scenario["connections"]:
            for ex in conn["exchanges"]:
                ex["verdict"] = spec.get("verdicts", {}).get(_request_line(corpus.unb64(ex["request"])), "same")
        with open(path, "w") as f:
            json.dump(ordered(scenario), f, indent=1)
            f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--redeclare", action="store_true",
                        help="only carry scenarios.py's declarations (verdicts, xfail, masks, setup) into the "
                             "recorded files, recording nothing")
    parser.add_argument("--bridge", help="a bridge of this name (192.0.2.1/24, TEST-NET-1) for dockerd, "
                                         "made and removed here; else --bridge=none")
    parser.add_argument("--py", default="/tmp/corpus-py/bin/python", help="a venv with docker and testcontainers")
    parser.add_argument("--node", default="/tmp/corpus-node", help="a dir with dockerode and testcontainers")
    args = parser.parse_args()
    if args.redeclare:
        return redeclare(args.only)
    # A fixed path: it is in recorded bodies (a bind source, compose's
    # labels), and a replay makes the same one.
    work = corpus.FILES_DIR
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, mode=0o755)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": work, "DOCKER_CONFIG": work + "/.docker",
           "TESTCONTAINERS_RYUK_DISABLED": "true", "NODE_PATH": os.path.join(args.node, "node_modules"),
           "PY": args.py, "LANG": "C.UTF-8"}
    files = corpus.make_files(work)
    files.update(py=args.py, node_dir=args.node, tools=os.path.dirname(os.path.abspath(__file__)))
    dockerd = Dockerd(tempfile.mkdtemp(prefix="cps-d-"), args.bridge)
    try:
        run_direct(["docker", "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["sh"]', "{busybox_tar}", "bt-busybox:1"],
                   dockerd.sock, files, env)
        # an image saved by this dockerd, for `docker load`
        files["tiny_image"] = os.path.join(work, "tiny-image.tar")
        for step in (["docker", "import", "{tiny_rootfs}", "cps-loaded:1"],
                     ["docker", "save", "-o", "{tiny_image}", "cps-loaded:1"], ["docker", "rmi", "cps-loaded:1"]):
            run_direct(step, dockerd.sock, files, env)
        listen = os.path.join(work, "rec.sock")
        os.makedirs(corpus.SCENARIOS, exist_ok=True)
        for name, spec in ALL.items():
            if not name.startswith(tuple(args.only.split(","))):
                continue
            t0 = time.monotonic()
            connections, outputs = record(spec, dockerd, files, env, listen)
            scenario = to_scenario(name, spec, connections, outputs, t0)
            if "version_of" in spec:
                scenario["client_version"] = version_of(expand(spec["version_of"], files))
            with open(os.path.join(corpus.SCENARIOS, name + ".json"), "w") as f:
                json.dump(ordered(scenario), f, indent=1)
                f.write("\n")
            n = sum(len(c["exchanges"]) for c in scenario["connections"])
            print(f"{name}: {n} requests in {time.monotonic() - t0:.1f} s, exits {scenario['recorded_exits']}"
                  + "".join(f"\n  {o['stderr'].strip()[:200]}" for o in outputs if o["exit"]))
    finally:
        dockerd.stop()
        unmount_below(dockerd.root)
        shutil.rmtree(dockerd.root)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
