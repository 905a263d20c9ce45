"""A user's recent refusals, kept by the policy proxy so they can see them
when their client hides berth's message (the Go client's h2c upgrade
throws a 403's body away: `unable to upgrade to h2c, received 403`).

The proxy keeps each user's last KEPT refusals in memory, in a Ring; a
restart of the proxy forgets them (they are a help for the user, not a
record: the admin's record is proxy.log). An entry is the time, the
method, the path cut short, the status and berth's reason and what to do
instead: never the query (a build's `buildargs`, a pull's `fromImage`
with a token in it) nor a body (an Env holds secrets). A user reads their
own through their socket, `GET PATH`, which the proxy answers itself
(before the policy, never passed to dockerd: no Docker route begins with
/_berth/); root reads any user's on the proxy's control socket.

Pure: the ring, the document the proxy answers with, and its rendering.
"""

import collections
import time

PATH = "/_berth/refusals"
PREFIX = "/_berth/"
KEPT = 300  # a user's last refusals; with the caps below, at most ~250 KiB a user
PATH_CHARS = 160  # of a request's path (the query never)
TEXT_CHARS = 300  # of a reason or a hint (a reason can quote the user's path)
SCHEMA = 1

Refused = collections.namedtuple("Refused", "time method path status what instead")


def _cut(text, limit):
    return text if len(text) <= limit else text[:limit] + "..."


def shown_path(target):
    """The part of a request target kept: its path, cut short; the query never."""
    return _cut(target.partition("?")[0], PATH_CHARS)


def from_message(message):
    """(what, instead) of a message berth wrote itself ("berth: <what>;
    <instead>"), or None for one that repeats dockerd's own wording."""
    if not message.startswith("berth: "):
        return None
    what, _, instead = message[len("berth: "):].partition("; ")
    return what, instead


class Ring:
    """One user's last `size` refusals, oldest first."""

    def __init__(self, size=KEPT):
        self.entries = collections.deque(maxlen=size)

    def add(self, now, method, target, status, what, instead):
        self.entries.append(Refused(now, method, shown_path(target), status,
                                    _cut(what, TEXT_CHARS), _cut(instead, TEXT_CHARS)))

    def to_json(self, user):
        return [{"user": user, **r._asdict()} for r in self.entries]


def document(entries):
    """What the proxy answers: {"schema": 1, "kept": KEPT, "refusals": [...]},
    `entries` being to_json's lists, joined oldest first."""
    return {"schema": SCHEMA, "kept": KEPT, "refusals": sorted(entries, key=lambda e: e["time"])}


def render(doc, localtime=time.localtime):
    """The refusals for people: a line of when, who (when several users
    are shown), method and path, then the reason and what to do instead."""
    entries = doc.get("refusals") or []
    if not entries:
        return (f"no refusals kept (the policy proxy keeps each user's last {doc.get('kept', KEPT)} "
                "for as long as it runs)")
    several = len({e["user"] for e in entries}) > 1
    lines = []
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", localtime(e["time"]))
        who = f"{e['user']}  " if several else ""
        lines.append(f"{when}  {who}{e['method']} {e['path']}  ({e['status']})")
        lines.append(f"    refused: {e['what']}")
        if e["instead"]:
            lines.append(f"    instead: {e['instead']}")
    return "\n".join(lines)
