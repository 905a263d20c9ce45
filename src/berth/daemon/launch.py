"""A user's dockerd as a configuration of the supervisor
(core/supervision.py): its command, log, record and unit name, and how
it starts; the same whether `up` starts it or the prelaunch does before
the config is read (prelaunch.py). Imports nothing heavy."""

import os
import time

from berth.core import record, supervision


def argv(dockerd, daemon_json):
    return [dockerd, "--config-file", daemon_json]


def unit_name(user):
    return f"berth-dockerd-{user}.service"


def dockerd_supervisor(upaths, use_systemd=False, properties=()):
    """The supervisor of the user's dockerd: known by its record and by
    its daemon.json on its command line."""
    return supervision.Supervisor(
        f"dockerd for {upaths.user}", upaths.log_file, unit_name(upaths.user), properties,
        use_systemd=use_systemd, record_path=upaths.record, kind=record.DaemonRecord, mark=upaths.daemon_json,
        log_mode=0o640, banner=f"starting dockerd for {upaths.user}", delays=(0.01, 0.1))


def start_dockerd(sup, upaths, dockerd, mode, bridge, containerd, mount_ns=None, cgroup="", unit_argv=None):
    """dockerd started by `sup` (dockerd_supervisor); its DaemonRecord. A
    hardened user's direct dockerd starts under nodevices' filter (loaded
    in the forked child, before the exec)."""
    in_child = None
    if mode == "hardened" and not sup.use_systemd:
        from berth.daemon import nodevices

        code = nodevices.encode(nodevices.program(os.uname().machine))  # Unsupported raised here, not in the child

        def in_child():
            nodevices.load_encoded(code)

    return sup.start(argv(dockerd, upaths.daemon_json), mount_ns=mount_ns, cgroup=cgroup, in_child=in_child,
                     unit_argv=unit_argv, fields={"started_at": time.time(), "dockerd": dockerd, "bridge": bridge,
                                                  "mode": mode, "containerd": containerd})
