"""What record.py records: each client's everyday commands, as data.

A scenario: `client`, `commands` (argument lists; {names} are corpus
files), `setup`/`teardown` (run straight against dockerd, unrecorded),
`verdicts` (`METHOD /path` -> `refuse:<what>; <instead>` for what berth
refuses on purpose; anything else is `same`), `xfail` (why a `same` is not
reached yet), `mask` (fields masked beyond corpus.MASKED, with why), `body`
(how an answer's body is compared when it is not JSON to compare:
"status-only" for a live measurement).
"""

BB = "bt-busybox:1"
CLIS = {
    "cli20": ("/usr/bin/docker", "docker CLI 20.10 (Debian docker.io)"),
    "cli28": ("/usr/local/bin/docker", "docker CLI 28 (/usr/local/bin)"),
}
CP_BIND = "docker cp with bind mounts: issue 20 part 4 (another helper)"
BUILDKIT = "BuildKit /session and /grpc: issue 20 part 3 (another helper)"
NAMELESS = {"Name": "a container made without a name gets one dockerd makes up (adjective_surname)"}
BRIDGE_NAMED = {"Options": "a network made through berth has its bridge named (the bridge-name rewrite)"}


CREATE = "POST /containers/create"
# berth's refusals, as `refuse:<what>; <what to do instead>`
REFUSED = {
    "privileged": "refuse:--privileged; run without it: containers get Docker's default capabilities, "
                  "and --gpus for GPUs",
    "net-host": "refuse:--net=host; use --net=container:net: your own namespace, with the same fixed ports",
    "cap-add": "refuse:capabilities beyond Docker's default set; drop --cap-add: the default set is what a "
               "container gets",
    "volume-opts": "refuse:volume driver options (type, device, o mount anything as host root); bind an existing "
                   "path instead (-v /home/you/data:/data)",
    "network-opts": "refuse:network driver options; drop --opt",
    "build-net-host": "refuse:a build with --network=host; build without it (RUN steps get the default network)",
    "import-url": "refuse:an import from a URL (dockerd would fetch it as root); fetch it yourself and pipe it: "
                  "curl -L URL | docker import - NAME",
}


def rm(*names):
    return [["docker", "rm", "-f", *names]]


def cli_scenarios(key):
    d, client = CLIS[key]

    def s(what, *commands, **kw):
        return {"client": client, "what": what, "version_of": [d, "version", "--format", "{{.Client.Version}}"],
                "commands": [[d, *c] for c in commands], **kw}

    out = {
        "version": s("docker version", ["version"]),
        "info": s("docker info", ["info"], body="status-only"),
        "ps": s("docker ps -a", ["ps", "-a", "--filter", "name=cps-"],
                setup=[["docker", "create", "--name", "cps-ps", BB, "true"]], teardown=rm("cps-ps")),
        "images": s("docker images", ["images", BB]),
        "run": s("docker run --rm", ["run", "--rm", BB, "echo", "hello"]),
        "run-detached": s("docker run -d", ["run", "-d", "--name", "cps-rund", BB, "sleep", "30"],
                          teardown=rm("cps-rund")),
        "run-stdin": s("docker run -i", ["run", "-i", "--rm", BB, "cat"], stdin="piped\n"),
        # README's way: every container in the namespace of a long-lived one (berth's own is `net`)
        "run-net-container": s("docker run --net=container:NAME",
                               ["run", "--rm", "--net=container:cps-netns", BB, "echo", "joined"],
                               setup=[["docker", "run", "-d", "--name", "cps-netns", BB, "sleep", "30"]],
                               teardown=rm("cps-netns")),
        "create": s("docker create with a bind, env and memory",
                    ["create", "--name", "cps-create", "-e", "A=1", "--memory", "64m", "-v", "{bind_dir}:/data",
                     BB, "true"], teardown=rm("cps-create"), rewrites=["binds-as-mounts", "json-reencoded"]),
        "start": s("docker start", ["start", "cps-start"],
                   setup=[["docker", "create", "--name", "cps-start", BB, "true"]], teardown=rm("cps-start")),
        "stop": s("docker stop", ["stop", "-t", "1", "cps-stop"],
                  setup=[["docker", "run", "-d", "--name", "cps-stop", BB, "sleep", "30"]], teardown=rm("cps-stop")),
        "restart": s("docker restart", ["restart", "-t", "1", "cps-restart"],
                     setup=[["docker", "run", "-d", "--name", "cps-restart", BB, "sleep", "30"]],
                     teardown=rm("cps-restart")),
        "kill": s("docker kill", ["kill", "cps-kill"],
                  setup=[["docker", "run", "-d", "--name", "cps-kill", BB, "sleep", "30"]], teardown=rm("cps-kill")),
        "pause": s("docker pause, unpause", ["pause", "cps-pause"], ["unpause", "cps-pause"],
                   setup=[["docker", "run", "-d", "--name", "cps-pause", BB, "sleep", "30"]],
                   teardown=rm("cps-pause")),
        "rename": s("docker rename", ["rename", "cps-rename", "cps-renamed"],
                    setup=[["docker", "create", "--name", "cps-rename", BB, "true"]],
                    teardown=rm("cps-rename", "cps-renamed")),
        "rm": s("docker rm", ["rm", "cps-rm"], setup=[["docker", "create", "--name", "cps-rm", BB, "true"]],
                teardown=rm("cps-rm")),
        "wait": s("docker wait", ["wait", "cps-wait"],
                  setup=[["docker", "run", "-d", "--name", "cps-wait", BB, "sleep", "1"]], teardown=rm("cps-wait")),
        "update": s("docker update", ["update", "--memory", "96m", "--memory-swap", "96m", "cps-update"],
                    setup=[["docker", "create", "--name", "cps-update", BB, "true"]], teardown=rm("cps-update"),
                    rewrites=["json-reencoded"]),
        "exec": s("docker exec", ["exec", "cps-exec", "echo", "hi"],
                  setup=[["docker", "run", "-d", "--name", "cps-exec", BB, "sleep", "30"]], teardown=rm("cps-exec"),
                  rewrites=["json-reencoded"]),
        "exec-stdin": s("docker exec -i", ["exec", "-i", "cps-execi", "cat"], stdin="piped\n",
                        setup=[["docker", "run", "-d", "--name", "cps-execi", BB, "sleep", "30"]],
                        teardown=rm("cps-execi"), rewrites=["json-reencoded"]),
        "attach": s("docker attach", ["attach", "cps-attach"],
                    setup=[["docker", "run", "-d", "--name", "cps-attach", BB, "sh", "-c", "sleep 2; echo attached"]],
                    teardown=rm("cps-attach")),
        "logs": s("docker logs", ["logs", "cps-logs"],
                  setup=[["docker", "run", "--name", "cps-logs", BB, "echo", "logged"]], teardown=rm("cps-logs")),
        "top": s("docker top", ["top", "cps-top"],
                 setup=[["docker", "run", "-d", "--name", "cps-top", BB, "sleep", "30"]], teardown=rm("cps-top"),
                 mask={"Processes": "process ids, users and times"}),
        "stats": s("docker stats --no-stream", ["stats", "--no-stream", "cps-stats"],
                   setup=[["docker", "run", "-d", "--name", "cps-stats", BB, "sleep", "30"]],
                   teardown=rm("cps-stats"), body="status-only"),
        "diff": s("docker diff", ["diff", "cps-diff"],
                  setup=[["docker", "run", "--name", "cps-diff", BB, "sh", "-c", "echo x > /tmp/x"]],
                  teardown=rm("cps-diff")),
        "export": s("docker export", ["export", "-o", "{out}/export.tar", "cps-export"],
                    setup=[["docker", "create", "--name", "cps-export", BB, "true"]], teardown=rm("cps-export"),
                    body="names"),
        "commit": s("docker commit", ["commit", "cps-commit", "cps-committed:1"],
                    setup=[["docker", "run", "--name", "cps-commit", BB, "sh", "-c", "echo x > /tmp/x"]],
                    teardown=[*rm("cps-commit"), ["docker", "rmi", "cps-committed:1"]]),
        "cp-in": s("docker cp into a container", ["cp", "{payload}", "cps-cp:/tmp/payload"],
                   setup=[["docker", "run", "-d", "--name", "cps-cp", BB, "sleep", "30"]], teardown=rm("cps-cp"),
                   rewrites=["archive-by-id"]),
        "cp-out": s("docker cp out of a container", ["cp", "cps-cpo:/bin/sh", "{out}/cp-out"],
                    setup=[["docker", "run", "-d", "--name", "cps-cpo", BB, "sleep", "30"]], teardown=rm("cps-cpo"),
                    rewrites=["archive-by-id"], body="names"),
        "cp-bind": s("docker cp into a container with a bind mount", ["cp", "{payload}", "cps-cpb:/tmp/payload"],
                     setup=[["docker", "run", "-d", "--name", "cps-cpb", "-v", "{bind_dir}:/data", BB, "sleep",
                             "30"]], teardown=rm("cps-cpb"), xfail=CP_BIND, rewrites=["archive-by-id"]),
        "build": s("docker build (classic builder)", ["build", "-t", "cps-built:1", "{context}"],
                   env={"DOCKER_BUILDKIT": "0"}, teardown=[["docker", "rmi", "cps-built:1"]],
                   mask={"stream": "build output names the build's container and image ids"}),
        "tag": s("docker tag", ["tag", BB, "cps-tagged:1"], teardown=[["docker", "rmi", "cps-tagged:1"]]),
        "rmi": s("docker rmi", ["rmi", "cps-rmi:1"], setup=[["docker", "tag", BB, "cps-rmi:1"]]),
        "pull": s("docker pull (no registry: dockerd's error)", ["pull", "127.0.0.1:9/cps/none:1"]),
        "push": s("docker push (no registry: dockerd's error)", ["push", "127.0.0.1:9/cps/push:1"],
                  setup=[["docker", "tag", BB, "127.0.0.1:9/cps/push:1"]],
                  teardown=[["docker", "rmi", "127.0.0.1:9/cps/push:1"]]),
        "save": s("docker save", ["save", "-o", "{out}/saved.tar", "cps-tiny:1"],
                  setup=[["docker", "import", "{tiny_rootfs}", "cps-tiny:1"]],
                  teardown=[["docker", "rmi", "cps-tiny:1"]], body="names"),
        "load": s("docker load", ["load", "-i", "{tiny_image}"], teardown=[["docker", "rmi", "cps-loaded:1"]]),
        "import": s("docker import", ["import", "{tiny_rootfs}", "cps-imported:1"],
                    teardown=[["docker", "rmi", "cps-imported:1"]]),
        "inspect-container": s("docker inspect CONTAINER", ["inspect", "cps-insp"],
                               setup=[["docker", "create", "--name", "cps-insp", BB, "true"]],
                               teardown=rm("cps-insp")),
        "inspect-image": s("docker inspect IMAGE", ["inspect", BB]),
        "inspect-missing": s("docker inspect NAME that is nothing", ["inspect", "cps-nothing"]),
        "network-create": s("docker network create", ["network", "create", "cps-net"],
                            teardown=[["docker", "network", "rm", "cps-net"]],
                            rewrites=["bridge-name", "json-reencoded"]),
        "network-ls": s("docker network ls", ["network", "ls", "--filter", "name=cps-"]),
        "network-inspect": s("docker network inspect", ["network", "inspect", "cps-neti"],
                             setup=[["docker", "network", "create", "cps-neti"]],
                             teardown=[["docker", "network", "rm", "cps-neti"]],
                             mask={"Options": "the bridge name berth gives (bridge-name rewrite)",
                                   "Subnet": "a subnet from the daemon's pool", "Gateway": "its gateway"}),
        "network-connect": s("docker network connect, disconnect", ["network", "connect", "cps-netc", "cps-netcc"],
                             ["network", "disconnect", "cps-netc", "cps-netcc"],
                             setup=[["docker", "network", "create", "cps-netc"],
                                    ["docker", "create", "--name", "cps-netcc", BB, "true"]],
                             teardown=[*rm("cps-netcc"), ["docker", "network", "rm", "cps-netc"]],
                             rewrites=["json-reencoded"]),
        "network-rm": s("docker network rm", ["network", "rm", "cps-netr"],
                        setup=[["docker", "network", "create", "cps-netr"]]),
        "volume-create": s("docker volume create", ["volume", "create", "cps-vol"],
                           teardown=[["docker", "volume", "rm", "cps-vol"]], rewrites=["json-reencoded"],
                           mask={"Mountpoint": "the daemon's data-root"}),
        "volume-ls": s("docker volume ls", ["volume", "ls", "--filter", "name=cps-"]),
        "volume-inspect": s("docker volume inspect", ["volume", "inspect", "cps-voli"],
                            setup=[["docker", "volume", "create", "cps-voli"]],
                            teardown=[["docker", "volume", "rm", "cps-voli"]],
                            mask={"Mountpoint": "the daemon's data-root"}),
        "volume-rm": s("docker volume rm", ["volume", "rm", "cps-volr"],
                       setup=[["docker", "volume", "create", "cps-volr"]]),
        "events": s("docker events (a past window)", ["events", "--since", "1700000000", "--until", "1700000001"]),
        "system-df": s("docker system df", ["system", "df"], body="status-only"),
        "container-prune": s("docker container prune", ["container", "prune", "-f"],
                             setup=[["docker", "create", "--name", "cps-pruned", BB, "true"]]),
        "image-prune": s("docker image prune", ["image", "prune", "-f"]),
        "network-prune": s("docker network prune", ["network", "prune", "-f"],
                           setup=[["docker", "network", "create", "cps-netp"]]),
        "volume-prune": s("docker volume prune", ["volume", "prune", "-f"],
                          setup=[["docker", "volume", "create", "cps-volp"]],
                          teardown=[["docker", "volume", "rm", "cps-volp"]]),
        "system-prune": s("docker system prune", ["system", "prune", "-f"], body="status-only"),
        # refused on purpose: more than the user's shell account
        "refuse-privileged": s("docker run --privileged", ["run", "--rm", "--privileged", BB, "true"],
                               verdicts={CREATE: REFUSED["privileged"]}),
        "refuse-net-host": s("docker run --net=host", ["run", "--rm", "--net=host", BB, "true"],
                             verdicts={CREATE: REFUSED["net-host"]}),
        "refuse-cap-add": s("docker run --cap-add SYS_ADMIN", ["run", "--rm", "--cap-add", "SYS_ADMIN", BB, "true"],
                            verdicts={CREATE: REFUSED["cap-add"]}),
        "refuse-volume-opts": s("docker volume create -o type=tmpfs",
                                ["volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "cps-volo"],
                                verdicts={"POST /volumes/create": REFUSED["volume-opts"]},
                                teardown=[["docker", "volume", "rm", "cps-volo"]]),
        "refuse-network-opts": s("docker network create -o",
                                 ["network", "create", "-o", "com.docker.network.driver.mtu=1400", "cps-neto"],
                                 verdicts={"POST /networks/create": REFUSED["network-opts"]},
                                 teardown=[["docker", "network", "rm", "cps-neto"]]),
        "refuse-build-net-host": s("docker build --network host", ["build", "--network", "host", "{context}"],
                                   env={"DOCKER_BUILDKIT": "0"}, verdicts={"POST /build": REFUSED["build-net-host"]}),
        "refuse-import-url": s("docker import URL", ["import", "http://127.0.0.1:9/x.tar"],
                               verdicts={"POST /images/create": REFUSED["import-url"]}),
    }
    if key == "cli20":
        out["build-buildkit"] = s("DOCKER_BUILDKIT=1 docker build", ["build", "-t", "cps-bk:1", "{context}"],
                                  env={"DOCKER_BUILDKIT": "1"}, xfail=BUILDKIT, budget=5,
                                  teardown=[["docker", "rmi", "cps-bk:1"]], body="status-only")
    return {f"{key}-{name}": scenario for name, scenario in out.items()}


COMPOSE = ["docker-compose", "-f", "{compose_dir}/docker-compose.yml", "-p", "cps"]
COMPOSE_DOWN = [[*COMPOSE, "down", "-v", "-t", "1"]]


def compose_scenarios():
    def s(what, *commands, **kw):
        return {"client": "docker-compose 1.29 (Debian)", "what": what,
                "version_of": ["docker-compose", "version", "--short"],
                "commands": [[*COMPOSE, *c] for c in commands], **kw}
    up = [[*COMPOSE, "up", "-d"]]
    return {
        "compose-up": s("compose up -d", ["up", "-d"], teardown=COMPOSE_DOWN,
                        rewrites=["bridge-name", "json-reencoded"]),
        "compose-ps": s("compose ps", ["ps"], setup=up, teardown=COMPOSE_DOWN),
        "compose-logs": s("compose logs", ["logs"], setup=up, teardown=COMPOSE_DOWN),
        "compose-exec": s("compose exec -T", ["exec", "-T", "app", "echo", "hi"], setup=up, teardown=COMPOSE_DOWN,
                          rewrites=["json-reencoded"]),
        "compose-down": s("compose down -v", ["down", "-v", "-t", "1"], setup=up, teardown=COMPOSE_DOWN),
    }


PY_RUN = """
import docker
c = docker.from_env()
print(c.containers.run("bt-busybox:1", "echo hi", remove=True))
"""
PY_LIFECYCLE = """
import docker
c = docker.from_env()
k = c.containers.run("bt-busybox:1", "sleep 30", detach=True, name="cps-py")
print(k.exec_run("echo hi"))
print(k.logs())
k.stop(timeout=1)
k.remove()
"""
PY_OBJECTS = """
import docker
c = docker.from_env()
c.images.get("bt-busybox:1")
c.images.list()
c.api.tag("bt-busybox:1", "cps-py/tagged", "1")
c.images.remove("cps-py/tagged:1")
n = c.networks.create("cps-pynet")
n.remove()
v = c.volumes.create("cps-pyvol")
v.remove()
try:
    c.images.get("cps-py/none@sha256:" + "0" * 64)
except docker.errors.ImageNotFound as e:
    print(e)
"""
TC_PY = """
from testcontainers.core.container import DockerContainer
with DockerContainer("bt-busybox:1").with_command("sleep 30") as k:
    print(k.exec("echo hi"))
"""


def python_scenarios():
    def s(client, version_of, what, script, **kw):
        return {"client": client, "what": what, "version_of": ["{py}", "-c", version_of],
                "commands": [["{py}", "-c", script]], **kw}
    sdk = ("Docker SDK for Python", "import docker; print(docker.__version__)")
    tc = ("testcontainers (PyPI)", "import importlib.metadata as m; print(m.version('testcontainers'))")
    return {
        "dockerpy-run": s(*sdk, "containers.run(remove=True)", PY_RUN, mask=NAMELESS),
        "dockerpy-lifecycle": s(*sdk, "run detached, exec_run, logs, stop, remove", PY_LIFECYCLE,
                                teardown=rm("cps-py"), rewrites=["json-reencoded"]),
        "dockerpy-objects": s(*sdk, "images get/list/tag/remove, a digest reference, networks, volumes",
                              PY_OBJECTS, rewrites=["bridge-name", "json-reencoded"], mask=BRIDGE_NAMED),
        "testcontainers-py": s(*tc, "DockerContainer start, exec, stop (Ryuk off)", TC_PY,
                               rewrites=["json-reencoded"], mask=NAMELESS),
    }


NODE_DOCKERODE = """
const Docker = require('dockerode');
const d = new Docker({socketPath: process.env.DOCKER_HOST.replace('unix://', '')});
(async () => {
  const c = await d.createContainer({Image: 'bt-busybox:1', Cmd: ['echo', 'hi'], name: 'cps-node'});
  await c.start();
  await c.wait();
  console.log((await c.logs({stdout: true})).toString());
  await c.remove();
  await d.listContainers({all: true});
  await d.getImage('bt-busybox:1').inspect();
  const n = await d.createNetwork({Name: 'cps-nodenet'});
  await n.remove();
  const v = await d.createVolume({Name: 'cps-nodevol'});
  await d.getVolume('cps-nodevol').remove();
})().catch(e => { console.error(e.message); process.exit(1); });
"""
NODE_TC = """
const {GenericContainer} = require('testcontainers');
(async () => {
  const c = await new GenericContainer('bt-busybox:1').withCommand(['sleep', '30']).start();
  console.log((await c.exec(['echo', 'hi'])).output);
  await c.stop({timeout: 1});
})().catch(e => { console.error(e.message); process.exit(1); });
"""


def node_scenarios():
    def s(client, package, what, script, **kw):
        return {"client": client, "what": what,
                "version_of": ["node", "-p", f"require('{{node_dir}}/node_modules/{package}/package.json').version"],
                "commands": [["node", "-e", script]], **kw}
    return {
        "dockerode": s("dockerode (npm)", "dockerode", "create with name, start, wait, logs, remove, "
                       "list, image inspect, network and volume", NODE_DOCKERODE,
                       teardown=rm("cps-node"), rewrites=["create-keys", "bridge-name", "json-reencoded"]),
        "testcontainers-node": s("testcontainers (npm)", "testcontainers", "GenericContainer start, exec, stop "
                                 "(Ryuk off)", NODE_TC, rewrites=["create-keys", "json-reencoded"], mask=NAMELESS),
    }


ALL = {**cli_scenarios("cli20"), **cli_scenarios("cli28"), **compose_scenarios(), **python_scenarios(),
       **node_scenarios()}
