"""What `up` and the reaper repair on the host around users' daemons:
addresses in a user's block on another user's interfaces, and dockerds
that lost the shared containerd until they reach it again."""

import ipaddress
import logging
import time

from berth.core import paths, record
from berth.daemon import engine
from berth.lifecycle import hostobjects
from berth.net import bridge, trespass

log = logging.getLogger(__name__)


def clear_trespassers(cfg, blocks_of, own_bridge=None):
    """Take off other users' interfaces any address in the blocks of
    `blocks_of` ({user: block}): a block is routed to its user alone.
    Returns what was removed. Users' daemons are asked which bridges are
    theirs only when some other interface holds such an address."""
    suspects = [(link, address) for link, address in bridge.addresses()
                if link != own_bridge and any(ipaddress.IPv4Interface(address).network.overlaps(
                    ipaddress.IPv4Network(block)) for block in blocks_of.values())]
    if not suspects:
        return []
    found = trespass.trespassers(suspects, blocks_of,
                                 hostobjects.user_interfaces(cfg, hostobjects.lease_table(cfg).read()))
    for link, address, owner, holder in found:
        bridge.remove_address(link, address)
        log.warning("removed %s from %s, a bridge of %s's daemon: it lies in %s's block", address, link, holder,
                    owner)
    return found


def daemons_on_shared_containerd(cfg, address=None):
    """The users whose running dockerd berth started on a shared containerd
    (on the one at `address`, if given)."""
    return [n for n in hostobjects.known_users(cfg, {})
            if (rec := record.running(paths.for_user(cfg, n))) is not None and rec.containerd
            and address in (None, rec.containerd)]


def wait_reconnected(cfg, names, timeout=10.0):
    """After the shared containerd came back: until the users' running
    dockerds reach it again (gRPC retries a lost connection with a backoff
    of up to 3 s; until then every start, stop or exec fails). A call that
    needs containerd answers 503 (unavailable) until then."""
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            try:
                status, _ = engine.request(paths.for_user(cfg, name).engine_socket,
                                           f"/containers/{cfg.net_container.name}/top", 5.0)
            except OSError:
                status = 0  # dockerd itself does not answer: not this wait's to report
            if status < 500:
                waiting.remove(name)
        if waiting:
            time.sleep(0.1)
    if waiting:
        log.warning("the dockerds of %s have not reached the shared containerd again within %g s",
                    ", ".join(waiting), timeout)
