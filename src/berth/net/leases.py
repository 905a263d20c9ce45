"""The lease table: which block of the pool each user holds, for good.

A lease outlives down, reap, reboot and crash, so a user always gets the same
subnet back; only an admin's purge releases it. The file is written
atomically under a lock, and a file we cannot parse is never overwritten.
"""

import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass

from berth.core.errors import LeaseFileCorrupt, SubnetsExhausted
from berth.core.fsutil import atomic_write, ensure_dir, read_trusted
from berth.core.locks import filelock_held
from berth.core.paths import ROOT_ONLY, TRAVERSE_ONLY
from berth.net import blocks

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Lease:
    user: str
    uid: int
    block: ipaddress.IPv4Network
    since: float

    def to_json(self):
        return {"uid": self.uid, "block": str(self.block), "since": self.since}


class LeaseTable:
    def __init__(self, state_dir, lock_timeout=60.0):
        self.path = os.path.join(state_dir, "leases.json")
        self.state_dir = state_dir
        # In the root-only locks dir: a lock file a user can open is a lock
        # they can hold, and nobody new would get a block.
        self.lock_path = os.path.join(state_dir, "lock", "leases.lock")
        self.lock_timeout = lock_timeout

    def read(self):
        """All leases, by user. Lock-free: the file is only ever replaced whole."""
        raw = read_trusted(self.path)
        if raw is None:
            return {}
        return self._parse(raw)

    def get(self, user):
        return self.read().get(user)

    def acquire(self, user, uid, pool, block_prefix, host_networks, now=None):
        """The user's lease, making one if they have none.

        `host_networks` is a callable returning the host's networks; it is
        only called when a new block must be chosen.
        """
        existing = self.get(user)
        if existing is not None:
            return existing
        with self._locked():
            leases = self.read()
            if user in leases:
                return leases[user]
            taken = [lease.block for lease in leases.values()]
            block = blocks.choose_block(pool, block_prefix, taken, host_networks())
            if block is None:
                raise SubnetsExhausted(
                    f"no free /{block_prefix} left in {pool} "
                    f"({len(leases)} leased, the rest overlap host networks)",
                    hint="enlarge [network].pool or release leases of users who left (berth down --purge)")
            lease = Lease(user, uid, block, time.time() if now is None else now)
            leases[user] = lease
            self._write(leases)
            log.info("leased %s to %s", block, user)
            return lease

    def _locked(self):
        ensure_dir(self.state_dir, TRAVERSE_ONLY)
        ensure_dir(os.path.dirname(self.lock_path), ROOT_ONLY)
        return filelock_held(self.lock_path, self.lock_timeout, "the lease table")

    def release(self, user):
        with self._locked():
            leases = self.read()
            if leases.pop(user, None) is None:
                return False
            self._write(leases)
            log.info("released the lease of %s", user)
            return True

    def _write(self, leases):
        doc = {"version": FORMAT_VERSION,
               "leases": {u: lease.to_json() for u, lease in sorted(leases.items())}}
        # Root's alone: every user's name and block are in it.
        atomic_write(self.path, json.dumps(doc, indent=1) + "\n", mode=0o600)

    def _parse(self, raw):
        try:
            doc = json.loads(raw)
            if doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            return {user: Lease(user, int(entry["uid"]), ipaddress.IPv4Network(entry["block"]),
                                float(entry["since"]))
                    for user, entry in doc["leases"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LeaseFileCorrupt(
                f"lease file {self.path} is corrupt ({e}); berth will not overwrite it",
                hint="restore it from a backup or fix the JSON by hand; "
                     "moving it aside gives users new subnets") from e
