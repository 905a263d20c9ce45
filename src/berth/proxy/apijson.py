"""Docker API request bodies read the way dockerd reads them. Pure.

dockerd decodes JSON with Go's encoding/json: a key matches a field case-
insensitively, and of two keys for one field the last wins. A checker that
reads JSON any other way can be fooled ("privileged": true next to
"Privileged": false). So: a key repeated in one object, in any case, is
refused; non-finite numbers are refused; and what is forwarded is the
object as parsed, encoded again.
"""

import json

MAX_BODY = 1 << 20  # JSON bodies over this are refused, not skimmed


class BadBody(ValueError):
    """A body berth will not pass on; the message says why."""


def _pairs(pairs):
    seen = {}
    for key, _ in pairs:
        folded = key.casefold()
        if folded in seen:
            raise BadBody(f'the key "{key}" appears twice in one object (as "{seen[folded]}" too)')
        seen[folded] = key
    return CaseFoldDict(pairs)


def _constant(name):
    raise BadBody(f"{name} is not a JSON number")


MAX_CONTAINERS = 10000  # objects and arrays in one body: parsing is on the loop every user shares
MAX_DEPTH = 64
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{}[]")


def _shape_ok(body):
    """A cheap bound before parsing: brackets counted as if none were in a
    string (a body that only looks too big is refused too: never a real one)."""
    if body.count(b"{") + body.count(b"[") > MAX_CONTAINERS:
        return False
    depth = deepest = 0
    for byte in body.translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"{[" else -1
        deepest = max(deepest, depth)
    return deepest <= MAX_DEPTH


def loads(body):
    """The body as dockerd would see it; raises BadBody."""
    if len(body) > MAX_BODY:
        raise BadBody(f"the request body is over {MAX_BODY // 1024} KiB")
    if not _shape_ok(body):
        raise BadBody(f"a request body nested over {MAX_DEPTH} deep or with over {MAX_CONTAINERS} objects")
    try:
        return json.loads(body or b"null", object_pairs_hook=_pairs, parse_constant=_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadBody(f"the request body is not JSON ({e})") from e


def dumps(value):
    return json.dumps(value, separators=(",", ":")).encode()


class CaseFoldDict(dict):
    """A JSON object whose keys are looked up as dockerd matches fields:
    case-insensitively (keys are unique in any case, see _pairs). It is a
    dict, so it encodes back exactly as it came."""

    def __init__(self, pairs=()):
        super().__init__(pairs)
        self._keys = {k.casefold(): k for k in self}

    def field(self, name, default=None):
        key = self._keys.get(name.casefold())
        return default if key is None else self[key]
