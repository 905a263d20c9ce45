"""Render one user's daemon.json. Pure: config, paths and layout in, dict out."""

import json

# dockerd's BuildKit may be asked for these per build, through gRPC the
# proxy cannot read: a RUN step in the host's network namespace, or one
# with every capability and no seccomp. On 20.10 network-host is granted
# unless it is set false (moby builder/builder-next/controller.go,
# getEntitlements); hardened daemons grant neither.
NO_ENTITLEMENTS = {"network-host": False, "security-insecure": False}


def builder(site):
    """The site's `builder` section (its GC policy) with entitlements off.
    dockerd reads JSON keys case-insensitively, so any spelling of the
    site's own entitlements goes."""
    kept = {k: v for k, v in (site or {}).items() if k.casefold() != "entitlements"}
    return {**kept, "Entitlements": dict(NO_ENTITLEMENTS)}


def render(cfg, upaths, layout, bridge, remap=None, containerd=None, cgroup_parent=None):
    """`remap`: hardened mode's mapping account (container root is the user), or None.
    `containerd`: (socket, namespace, plugins namespace) of the shared
    containerd, or None for a containerd of dockerd's own. `cgroup_parent`:
    the user's cgroup, which holds all their containers to their limits."""
    owned = {
        "data-root": upaths.data_root,
        "exec-root": upaths.exec_root,
        # berth talks to dockerd on its own socket, root's alone. The user's
        # socket is the policy proxy's in hardened mode, dockerd's in trusted.
        "hosts": ["unix://" + upaths.engine_socket] + ([] if remap else [upaths.docker_host]),
        "pidfile": upaths.pidfile,
        "bridge": bridge,
        # Keep the bridge's containers inside the bridge subnet.
        "fixed-cidr": str(layout.bridge_net),
        # Every daemon with iptables on rewrites Docker's chains and breaks
        # the others (moby#34567); berth owns NAT and isolation instead.
        "iptables": False,
        "ip-masq": False,
        # User-defined networks come from the user's own half of the block,
        # never from Docker's global default (where two users would collide).
        "default-address-pools": [
            {"base": str(layout.user_pool), "size": layout.user_network_prefix},
        ],
        # The socket is created root:root 0660 and handed to the user by
        # berth afterwards; never the shared "docker" group.
        "group": "root",
        # The reaper only stops daemons with no running containers, and a
        # daemon down for long would block containers on full log pipes.
        "live-restore": False,
    }
    site = dict(cfg.daemon_json)
    if remap:
        owned["userns-remap"] = remap
        site_builder = [v for k, v in site.items() if k.casefold() == "builder" and isinstance(v, dict)]
        site = {k: v for k, v in site.items() if k.casefold() != "builder"}
        owned["builder"] = builder(site_builder[-1] if site_builder else None)
    if cgroup_parent:
        owned["cgroup-parent"] = cgroup_parent
    if containerd:
        address, namespace, plugins_namespace = containerd
        owned.update({"containerd": address, "containerd-namespace": namespace,
                      "containerd-plugins-namespace": plugins_namespace})
    return {**site, **owned}


def dumps(doc):
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
