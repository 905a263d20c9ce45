"""`berth slurm prolog|epilog|task-prolog`: Slurm's hooks on a node.

Prolog (root, once per job per node with PrologFlags=Alloc): the job
user's daemon up, the job's grant (GPUs from SLURM_JOB_GPUS, limits from
Slurm's cgroup of the job, a cgroup of berth's for its containers; where
Slurm's cgroup comes after the Prolog, where its memory limit will be,
for the proxy to copy at the job's first create) written
beside the user's socket, and the proxy asked to serve the job's socket
`job-<id>.sock` with it. A failure of the user's (no free address block,
a daemon that will not start) is no failure of the node: the job's socket
then answers every request with what went wrong, and the Prolog exits 0.
It exits non-zero, and Slurm drains the node, only when the node cannot
serve any job (NodeBroken).

TaskProlog (as the user): `export DOCKER_HOST=unix://<run_dir>/<user>/job-<id>.sock`
when the job has a socket; it never fails (a failing TaskProlog cancels the task).

Epilog (root): the job's socket closed, its containers (label berth.job=<id>)
removed, the grant, socket and cgroup gone; then the reaper's own rule
(`let_go`) decides whether the user's daemon goes too.

No hook runs a Slurm command: they have no PATH, and must not call back
into slurmctld.
"""

import logging
import os
import pwd
import time

from berth.core import paths, users
from berth.core.errors import BerthError, ConfigError, LeaseFileCorrupt, MissingBinary, NotTrusted, UserRefused
from berth.core.fsutil import atomic_write, ensure_dir, remove
from berth.core.paths import SYSTEM_PATH, TRAVERSE_ONLY
from berth.daemon import cgroups
from berth.lifecycle import activity
from berth.proxy import control, jobgrant
from berth.slurm import gpus, gres, jobcgroup, jobenv

log = logging.getLogger(__name__)

# What no job on this node could get past: the hook fails, and Slurm drains the node.
NODE_ERRORS = (ConfigError, MissingBinary, NotTrusted, LeaseFileCorrupt)


class NodeBroken(BerthError):
    """This node cannot serve jobs: the hook exits 1 and Slurm drains it."""


# --- Prolog ---------------------------------------------------------------------------

def prolog(cfg, job, up=None, clock=time.monotonic):
    """The job's grant, served; None for a user berth does not serve.
    Raises NodeBroken."""
    t0 = clock()
    try:
        account = users.resolve(job.user, cfg.users.min_uid, cfg.users.max_uid)
    except UserRefused as e:
        log.info("job %s of %s: not a user berth serves (%s); nothing to do", job.job_id, job.user, e.message)
        return None
    cgroups.leave_slurm_job()  # slurmd's Prolog runs in no job's cgroup; one run by hand might
    if up is None:
        from berth.lifecycle.up import up
    try:
        result = up(cfg, account.name)
    except NODE_ERRORS as e:
        raise NodeBroken(f"job {job.job_id}: {e.message}", hint=e.hint) from e
    except BerthError as e:
        log.error("job %s of %s: the daemon could not be brought up: %s", job.job_id, account.name, e.one_line())
        return _serve_failure(cfg, job, account, f"your Docker daemon could not be started on this node "
                                                 f"({e.message})", e.hint)
    except Exception as e:  # berth's own fault, not the node's: the job is told, the node stays up
        log.exception("job %s of %s: unexpected error bringing the daemon up", job.job_id, account.name)
        return _serve_failure(cfg, job, account, f"your Docker daemon could not be started on this node "
                                                 f"(unexpected {type(e).__name__})",
                              "tell your administrator (berth's log on this node)")
    if result.mode != "hardened":
        log.warning("job %s of %s: %s's daemon runs in %s mode, where jobs get no socket of their own",
                    job.job_id, account.name, account.name, result.mode)
        return None
    try:
        resolved = job_gpus(job)
    except (gpus.UnknownGpu, OSError, ValueError) as e:
        log.error("job %s of %s: its GPUs %s cannot be told apart: %s", job.job_id, account.name,
                  ",".join(map(str, job.gpus)), e)
        return _serve_failure(cfg, job, account, f"berth cannot tell which GPUs job {job.job_id} was given "
                                                 f"({e})", "tell your administrator (berth's log on this node)")
    memory, nano_cpus = jobcgroup.slurm_limits(account.uid, job.job_id, allocated=job.cpus)
    cgroupfs = _cgroupfs(cfg)
    jobcgroup.make(account.name, job.job_id, memory, nano_cpus, cgroupfs)
    # Slurm's cgroup of the job, made after the Prolog: the proxy takes its memory from there
    later = {} if memory or not cgroupfs else {
        "slurm_memory": jobcgroup.slurm_memory_files(account.uid, job.job_id),
        "memory_file": jobcgroup.memory_file(account.name, job.job_id)}
    grant = jobgrant.Grant(job.job_id, account.name, account.uid, tuple(name for name, _ in resolved), memory,
                           nano_cpus, jobcgroup.parent(account.name, job.job_id, cgroupfs),
                           gpus.device_files(resolved), **later)
    _serve(cfg, paths.for_user(cfg, account.name), grant)
    log.info("job %s of %s: socket served in %.2f s (GPUs %s, memory %s, CPUs %s)", job.job_id, account.name,
             clock() - t0, ",".join(grant.gpus) or "none",
             grant.memory or ("from Slurm's cgroup at the first create" if grant.slurm_memory else "-"),
             f"{grant.nano_cpus / 1e9:g}" if grant.nano_cpus else "-")
    return grant


def job_gpus(job, smi_path=None):
    """[(name, minor)] of the job's GPUs on this node (gpus.resolve), from
    gres.conf beside slurm.conf and nvidia-smi where it exists."""
    if not job.gpus:
        return []
    with open(os.path.join(os.path.dirname(job.slurm_conf), "gres.conf")) as f:
        layout = gres.gpu_layout(f.read(), job.node or os.uname().nodename.split(".")[0])
    smi = gpus.nvidia_smi(smi_path or _which("nvidia-smi"))
    return gpus.resolve(job.gpus, layout, gpus.device_numbers(layout.files), smi)


def _which(program):
    import shutil

    return shutil.which(program, path=SYSTEM_PATH)


def _cgroupfs(cfg):
    from berth.daemon.supervisor import systemd_booted

    return cgroups.cgroupfs_driver(cfg.daemon_json, systemd_booted())


def _serve(cfg, upaths, grant):
    """The grant written (root's, 0600) and its socket served. Raises NodeBroken."""
    try:
        ensure_dir(cfg.paths.run_dir, TRAVERSE_ONLY)
        ensure_dir(upaths.run_dir, TRAVERSE_ONLY)
        atomic_write(upaths.job_grant(grant.job_id), jobgrant.render(grant), mode=0o600)
        control.serve_job(cfg.paths.run_dir, grant.user, grant.job_id)
    except (OSError, BerthError) as e:
        what = e.one_line() if isinstance(e, BerthError) else (e.strerror or str(e))
        raise NodeBroken(f"job {grant.job_id} of {grant.user}: its socket cannot be served ({what})",
                         hint="see berth's log and proxy.log in the log dir") from e


def _serve_failure(cfg, job, account, what, instead):
    """A socket for the job that answers every request with `what; instead`."""
    if cfg.security.mode != "hardened":
        return None
    from berth.lifecycle import hostobjects as host

    try:
        host.proxy_supervisor(cfg).ensure()
    except BerthError as e:
        raise NodeBroken(f"job {job.job_id}: the policy proxy cannot start ({e.message})", hint=e.hint) from e
    grant = jobgrant.Grant(job.job_id, account.name, account.uid, (), error=f"{what}; {instead}")
    _serve(cfg, paths.for_user(cfg, account.name), grant)
    return grant


# --- Epilog ---------------------------------------------------------------------------

def epilog(cfg, job_id, user, let_go=None):
    """Close the job's socket, remove its containers, grant and cgroup; then
    `let_go(cfg, user)` (the reaper's rule). Raises NodeBroken when the
    job's containers cannot be removed (they would hold its GPUs)."""
    try:
        account = users.resolve(user, cfg.users.min_uid, cfg.users.max_uid)
    except UserRefused:
        log.info("job %s of %s: not a user berth serves; nothing to do", job_id, user)
        return
    upaths = paths.for_user(cfg, account.name)
    close_socket(cfg.paths.run_dir, account.name, job_id)
    left = remove_containers(upaths.engine_socket, job_id)
    if left:
        raise NodeBroken(f"job {job_id} of {account.name}: container(s) {', '.join(left)} could not be removed",
                         hint=f"see {upaths.log_file}; remove them with 'docker rm -f' on {upaths.engine_socket}")
    had_grant = remove(upaths.job_grant(job_id))
    remove(upaths.job_socket(job_id))
    jobcgroup.remove(account.name, job_id, _cgroupfs(cfg))
    if not os.path.isdir(upaths.run_dir):
        return
    if had_grant:
        activity.touch(upaths)  # the job was activity until now: the idle time starts here
        log.info("job %s of %s: ended; its socket, containers and grant are gone", job_id, account.name)
    else:
        log.info("job %s of %s: ended with no grant here (its Prolog did not run on this node)", job_id, account.name)
    if let_go is not None:
        let_go(cfg, account.name)


def close_socket(run_dir, user, job_id, drop=control.drop_job, patience=30.0):
    """Have the proxy close the job's socket (and what is open on it).
    Raises NodeBroken when a proxy runs but does not answer even in
    `patience` seconds: it may go on serving the job's socket, whose
    containers would get the job's GPUs, the next job's."""
    for timeout in (5.0, patience):
        try:
            drop(run_dir, user, job_id, timeout=timeout)
            return
        except TimeoutError:
            log.warning("job %s of %s: the policy proxy did not close its socket in %g s", job_id, user, timeout)
        except OSError:
            return  # no proxy runs: nothing serves the socket
        except control.ProxyError as e:
            log.info("job %s of %s: %s", job_id, user, e.message)
            return
    raise NodeBroken(f"job {job_id} of {user}: the policy proxy does not answer, and may still serve the job's "
                     f"socket", hint="see proxy.log in berth's log dir; restart it (systemctl restart berth-proxy)")


def remove_containers(engine_socket, job_id, attempts=2):
    """Remove (force, with anonymous volumes) the containers labelled with
    the job; the ids of those still there after `attempts`, of the ones
    there at the first look (the job's socket is closed by then: one that
    carries the label only since came through another socket, the login
    socket's `--label` or an image's LABEL, with none of the job's GPUs,
    and must not drain the node)."""
    import json
    import urllib.parse

    from berth.daemon import engine

    query = urllib.parse.quote(json.dumps({"label": [f"{jobgrant.LABEL}={int(job_id)}"]}))
    left = []
    first = None
    for _ in range(attempts):
        try:
            listing = engine.get_json(engine_socket, f"/containers/json?all=1&filters={query}", timeout=30)
        except (OSError, ValueError):
            return []  # no daemon answers: no container of its runs
        first = {c["Id"] for c in listing} if first is None else first
        left = [c["Id"][:12] for c in listing if c["Id"] in first]
        for c in listing:
            try:
                status, body = engine.request(engine_socket, f"/containers/{c['Id']}?force=1&v=1", timeout=60,
                                              method="DELETE")
            except OSError as e:
                log.warning("job %s: removing container %s: %s", job_id, c["Id"][:12], e)
                continue
            if status not in (204, 404):
                log.warning("job %s: removing container %s: %d %s", job_id, c["Id"][:12], status,
                            body.decode(errors="replace").strip()[:200])
        if listing:
            log.info("job %s: removed %d container(s)", job_id, len(listing))
        else:
            return []
    try:
        return [c["Id"][:12] for c in engine.get_json(engine_socket, f"/containers/json?all=1&filters={query}",
                                                       timeout=30) if c["Id"] in first]
    except (OSError, ValueError):
        return left


# --- TaskProlog -----------------------------------------------------------------------

def task_prolog(run_dir, environ, uid):
    """The lines for slurmstepd: the job's DOCKER_HOST when it has a socket."""
    try:
        job_id = jobenv.job_id(environ)
        name = pwd.getpwuid(uid).pw_name
    except (jobenv.BadJobEnvironment, KeyError):
        return []
    if not users.is_valid_name(name):
        return []
    sock = paths.in_run_dir(run_dir, name).job_socket(job_id)
    return [f"export DOCKER_HOST=unix://{sock}"] if os.path.exists(sock) else []
