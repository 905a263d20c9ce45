"""GPUs held back on a socket: a Slurm job's socket gives its containers the
job's grant and no other GPU, and a Slurm node's login socket (`[slurm]
login_gpus = "none"`) gives none. Pure.

Every way a create reaches a GPU is held to the same grant:
- DeviceRequests (`--gpus`): every request but CDI's is one for GPUs (the
  drivers dockerd selects by capability are its GPU drivers: nvidia,
  nvidia.cdi, nvidia.runtime-hook, amd; moby daemon/devices*.go). `--gpus
  all` and `--gpus N` become the granted devices (DeviceIDs, in the
  grant's order); named devices must be granted ones.
- CDI requests (Driver "cdi", `--device nvidia.com/gpu=0`): nvidia.com's
  devices held to the grant, `=all` becoming the granted ones.
- `--device /dev/nvidia<N>`: only a device file the grant lists (nvidiactl,
  nvidia-uvm and the like open no GPU by themselves: SHARED_DEVICES); any
  other, /dev/nvidia-caps (MIG's, a directory: dockerd adds every device
  below it) and /dev/dri name no GPU berth can tell apart: refused.
- The nvidia runtime reads NVIDIA_VISIBLE_DEVICES from the container's
  environment, where the image's comes in unless the container sets its
  own (nvidia/cuda images say `all`): set in every container, to the grant
  (`void`: none). dockerd appends a request's own value after it, which the
  runtime reads last (moby daemon/nvidia_linux.go).
- The runtime's CDI annotations (`cdi.k8s.io/*`, HostConfig.Annotations
  from API 1.43): refused.
Two settings of the NVIDIA toolkit would open other ways, which no request
shows: `accept-nvidia-visible-devices-as-volume-mounts` (an image's VOLUME
can ask) and `swarm-resource` (another variable than the one set here).
A Slurm site leaves both unset, as they are by default.

A build's RUN steps are containers the proxy never sees: they run with
dockerd's default runtime and the image's environment. Where the site made
the nvidia runtime the default, they would see every GPU of the node, so
on a socket that holds GPUs back a build is refused unless runc is the
default (containers still get GPUs with --gpus, through runc's hook).

`docker update` changes no device: dockerd takes only CPU, memory, pids,
blkio and the restart policy from its body (moby daemon/container
UpdateContainer). A GPU field in one is still held to the grant, unchanged.

On a job's socket every container also carries the label LABEL=<job>
(whatever the client said), by which the Epilog removes them, and runs in
the grant's cgroup where it names one. A container keeps its devices for
good: one of another job's (a job whose Epilog missed it, since ended,
its GPUs another's now) is started through that job's socket alone, never
through another job's or the login socket of a Slurm node.
"""

import re
from collections import namedtuple

from berth.proxy.apijson import CaseFoldDict
from berth.proxy.jobgrant import LABEL
from berth.proxy.policy import Refusal, _get

# job_id: None for a Slurm node's login socket, which holds every GPU back;
# gpus: the granted GPUs as the runtime names them; devices: their device
# files; cgroup: the job's containers' cgroup parent ("" : the user's own).
Hold = namedtuple("Hold", "job_id gpus devices cgroup")
LOGIN = Hold(None, (), (), "")

VISIBLE = "NVIDIA_VISIBLE_DEVICES"
NO_GPU = "void"  # the runtime acts as runc: neither devices nor driver libraries
NUMBERED = re.compile(r"/dev/nvidia[0-9]+")
UNNAMED = re.compile(r"/dev/(nvidia-caps/.*|dri/.*)")
# The device files every GPU container opens, which open no GPU by themselves:
# any other /dev/nvidia* but a granted GPU's is refused in a job, a directory
# too (dockerd adds every device below one: /dev/nvidia-caps holds MIG's).
SHARED_DEVICES = frozenset({"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"})
CDI_ANNOTATION = "cdi.k8s.io/"
NVIDIA_CDI = "nvidia.com/"
IN_A_JOB = "srun --gpus=1 docker run --gpus all ..."


# Routes that start a container with the devices it was made with.
STARTS = re.compile(r"/containers/([^/]+)/(start|restart)")
# Routes that run build steps: the classic builder's and BuildKit's (buildx).
BUILDS = ("/build", "/grpc")
PLAIN_RUNTIMES = frozenset({"runc", "io.containerd.runc.v2"})


def for_grant(grant):
    return Hold(int(grant.job_id), tuple(grant.gpus), tuple(grant.devices), grant.cgroup)


def _outside_a_job(what):
    return Refusal(f"{what} outside a Slurm job (this node's GPUs are its jobs')",
                   f"run it in a job, which gets its own: {IN_A_JOB}")


def _granted(hold):
    return ", ".join(hold.gpus) if hold.gpus else "none"


def _not_granted(hold, what):
    if not hold.gpus:
        return Refusal(f"{what} in job {hold.job_id}, which was granted no GPU",
                       f"ask Slurm for GPUs: {IN_A_JOB}")
    return Refusal(f"{what}, not granted to job {hold.job_id} (it has {_granted(hold)})",
                   "use --gpus all for the job's own GPUs, or name one of them")


def _unreadable(what):
    return Refusal(f"a {what} berth cannot read", "send what the docker CLI sends")


def _gpu_request(request, hold):
    """A non-CDI device request held to `hold`: (the request, or None for a refusal)."""
    count, ids = _get(request, "Count"), _get(request, "DeviceIDs")
    if (count is not None and (not isinstance(count, int) or isinstance(count, bool))) or \
            (ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids))):
        return None, _unreadable("device request")
    count, ids = count or 0, ids or []
    if not ids and count == 0:
        return request, None  # no device: dockerd sets nothing, the environment holds
    if hold.job_id is None:
        return None, _outside_a_job("GPUs (--gpus)")
    if ids:
        outside = [i for i in ids if i not in hold.gpus]
        if outside:
            return None, _not_granted(hold, f"GPU {outside[0]!r}")
        return request, None  # with a Count too, dockerd refuses it itself
    if count > len(hold.gpus) or (count < 0 and not hold.gpus):
        if not hold.gpus:
            return None, _not_granted(hold, "GPUs (--gpus)")
        return None, Refusal(f"{count} GPUs in job {hold.job_id}, which was granted {len(hold.gpus)} "
                             f"({_granted(hold)})", "ask for fewer (--gpus all: the job's own), "
                             "or ask Slurm for more: srun --gpus=N ...")
    chosen = list(hold.gpus if count < 0 else hold.gpus[:count])
    rewritten = [(k, v) for k, v in request.items() if k.casefold() not in ("count", "deviceids")]
    return CaseFoldDict([*rewritten, ("Count", 0), ("DeviceIDs", chosen)]), None


def _cdi_request(request, hold):
    """A CDI request with nvidia.com's devices held to `hold`."""
    ids = _get(request, "DeviceIDs")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        return None, _unreadable("CDI device request")
    held = []
    for name in ids or ():
        kind, _, device = name.partition("=")
        if not kind.casefold().startswith(NVIDIA_CDI):
            held.append(name)  # another vendor's device: as on the user's socket
        elif hold.job_id is None:
            return None, _outside_a_job(f"the GPU {name!r}")
        elif device == "all":
            if not hold.gpus:
                return None, _not_granted(hold, f"the GPUs {name!r}")
            held += [f"{kind}={gpu}" for gpu in hold.gpus]
        elif device in hold.gpus:
            held.append(name)
        else:
            return None, _not_granted(hold, f"the GPU {name!r}")
    if held == list(ids or ()):
        return request, None
    return CaseFoldDict([*((k, v) for k, v in request.items() if k.casefold() != "deviceids"),
                         ("DeviceIDs", held)]), None


def _device_refusal(device, hold):
    path = str(_get(device, "PathOnHost") or "") if isinstance(device, dict) else ""
    if not path.startswith("/dev/nvidia") and not UNNAMED.fullmatch(path):
        return None  # not a GPU's (the policy allows no other)
    if hold.job_id is None:
        return _outside_a_job(f"the GPU device {path}")
    if NUMBERED.fullmatch(path):
        if path in hold.devices:
            return None
        if not hold.devices and hold.gpus:
            return Refusal(f"the device {path} in job {hold.job_id} (berth cannot tell it is one of the "
                           f"job's: {_granted(hold)})", "use --gpus all: the job's own GPUs")
        return _not_granted(hold, f"the device {path}")
    if path not in SHARED_DEVICES:
        return Refusal(f"the device {path} in a Slurm job (berth cannot tell whose GPU it is)",
                       "use --gpus all: the job's own GPUs")
    return None


def held_resources(resources, hold):
    """(the fields of a container.Resources to change, a refusal or None):
    a create's HostConfig or an update's body, held to `hold`."""
    changed = {}
    requests = _get(resources, "DeviceRequests")
    if requests is not None:
        if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
            return {}, _unreadable("DeviceRequests")
        held = []
        for request in requests:
            driver = str(_get(request, "Driver") or "")
            request, refusal = (_cdi_request if driver.casefold() == "cdi" else _gpu_request)(request, hold)
            if refusal is not None:
                return {}, refusal
            held.append(request)
        if any(a is not b for a, b in zip(held, requests)):
            changed["DeviceRequests"] = held
    for device in _get(resources, "Devices") or ():
        refusal = _device_refusal(device, hold)
        if refusal is not None:
            return {}, refusal
    return changed, None


def _annotations_refusal(host_config):
    annotations = _get(host_config, "Annotations")
    if isinstance(annotations, dict) and any(str(k).startswith(CDI_ANNOTATION) for k in annotations):
        return Refusal(f"a CDI annotation ({CDI_ANNOTATION}...) on a Slurm node",
                       "use --gpus all: the job's own GPUs")
    return None


def _replaced(obj, changes):
    """`obj` (a JSON object) with `changes` in place of its fields of those
    names, in any case, as a new CaseFoldDict."""
    folded = {k.casefold() for k in changes}
    return CaseFoldDict([*((k, v) for k, v in (obj or {}).items() if k.casefold() not in folded),
                         *changes.items()])


def create(body, hold):
    """(the create body as dockerd gets it, a refusal or None): `body` has
    passed policy.check."""
    host = _get(body, "HostConfig")
    changed, refusal = held_resources(host or {}, hold)
    refusal = refusal or _annotations_refusal(host or {})
    if refusal is not None:
        return None, refusal
    if hold.cgroup:
        changed["CgroupParent"] = hold.cgroup
    env = _get(body, "Env")
    if env is not None and not (isinstance(env, list) and all(isinstance(e, str) for e in env)):
        return None, _unreadable("Env")
    visible = ",".join(hold.gpus) or NO_GPU
    top = {"Env": [e for e in env or () if e.partition("=")[0] != VISIBLE] + [f"{VISIBLE}={visible}"]}
    if hold.job_id is not None:
        labels = _get(body, "Labels")
        if labels is not None and not isinstance(labels, dict):
            return None, _unreadable("Labels")
        top["Labels"] = {**{k: v for k, v in (labels or {}).items() if k != LABEL}, LABEL: str(hold.job_id)}
    if changed or host is not None:
        top["HostConfig"] = _replaced(host, changed)
    return _replaced(body, top), None


def build_refusal(default_runtime):
    """A refusal for a build on a socket that holds GPUs back, or None,
    from dockerd's DefaultRuntime (/info)."""
    if default_runtime in PLAIN_RUNTIMES:
        return None
    return Refusal(f"a build on this Slurm node, whose Docker runs build steps with the "
                   f"{default_runtime or 'unknown'} runtime (they would see every GPU the image asks for)",
                   "ask the administrator to leave runc the default runtime ([daemon_json] default-runtime): "
                   "containers still get GPUs with --gpus")


def start_refusal(labels, hold):
    """A refusal for starting a container with these labels (its
    Config.Labels) on a socket that holds GPUs, or None."""
    job = labels.get(LABEL) if isinstance(labels, dict) else None
    if job is None or (hold.job_id is not None and job == str(hold.job_id)):
        return None
    where = "outside it" if hold.job_id is None else f"in job {hold.job_id}"
    return Refusal(f"starting a container of Slurm job {job} {where} (it keeps that job's devices)",
                   f"create one here instead; job {job}'s own socket starts it while the job runs")


def update_refusal(body, hold):
    """A refusal for an update body (container.UpdateConfig), or None."""
    return held_resources(body or {}, hold)[1]
