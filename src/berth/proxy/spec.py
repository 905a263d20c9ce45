"""What the policy proxy needs to serve one user, as berth up writes it
for the proxy to read (`proxy.conf` in the user's run dir). Pure.

`key=value` lines: the proxy reads them at its start and on each `serve`,
so a restarted proxy serves everyone who was up without asking berth.
"""

import os
from collections import namedtuple

from berth.core import keyvalue
from berth.proxy import policy

# uid: who may connect (and owns the socket); networks: the user's half of
# their block (policy.Context); runtimes: what the site configured.
# bridge: the user's bridge, whose name prefixes their networks' bridges.
# pins: where the records of the user's pinned bind sources live (pins.py).
# gpus: ALL_GPUS, or NO_GPUS on a Slurm node whose [slurm] login_gpus is
# "none" (the node's GPUs are its jobs': jobpolicy.LOGIN).
Spec = namedtuple("Spec", "user uid networks runtimes bridge pins gpus", defaults=("", "", "all"))
ALL_GPUS, NO_GPUS = "all", "none"


class BadSpec(ValueError):
    pass


def for_user(cfg, account, layout):
    runtimes = ("runc", *sorted(dict(cfg.daemon_json).get("runtimes", {}) or {}))
    return Spec(account.name, account.uid, str(layout.user_pool), tuple(dict.fromkeys(runtimes)),
                f"{cfg.network.bridge_prefix}{account.uid}", pins_records(cfg, account.name), login_gpus(cfg))


def login_gpus(cfg):
    """What the login socket gives of the node's GPUs."""
    return NO_GPUS if cfg.slurm.enabled and cfg.slurm.login_gpus == "none" else ALL_GPUS


def pins_records(cfg, user):
    """Root's alone, beside the user's data-root: outlives a reboot."""
    return os.path.join(cfg.paths.state_dir, "users", user, "pins")


def render(spec):
    return keyvalue.render({"user": spec.user, "uid": spec.uid, "networks": spec.networks,
                            "runtimes": ",".join(spec.runtimes), "bridge": spec.bridge, "pins": spec.pins,
                            "gpus": spec.gpus})


def parse(text):
    try:
        fields = keyvalue.parse(text)
        if fields.get("gpus", ALL_GPUS) not in (ALL_GPUS, NO_GPUS):
            raise ValueError(f"gpus={fields['gpus']}")
        return Spec(fields["user"], int(fields["uid"]), fields["networks"],
                    tuple(r for r in fields["runtimes"].split(",") if r), fields.get("bridge", ""),
                    fields.get("pins", ""), fields.get("gpus", ALL_GPUS))
    except (KeyError, ValueError) as e:
        raise BadSpec(f"unreadable proxy spec ({e})") from None


def context(spec):
    return policy.Context(user_networks=spec.networks, runtimes=spec.runtimes, bridge=spec.bridge)
