"""Each user's share of the box: one cgroup above all their containers, its
limits from [limits] and [limits.users.<name>]. Pure: sizes, a user's
limits, and what to write into which cgroup file (v1 and v2).

    [limits]             # for every user; "" or 0 = no limit
    memory = "64G"       # all of a user's containers together
    cpu_weight = 100     # share under contention (v2 cpu.weight; v1 cpu.shares = weight * 1024 / 100)
    pids = 20000
    [limits.users.alice]
    memory = "200G"
"""

from collections import namedtuple

Limits = namedtuple("Limits", "memory cpu_weight pids")  # bytes (0: none), 1..10000, count (0: none)

KEYS = ("memory", "cpu_weight", "pids")
NONE = Limits(0, 100, 0)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value):
    """"64G", "512M", "1.5G", a number of bytes, or "" / 0 for none -> bytes."""
    if isinstance(value, bool):
        raise ValueError("a size such as \"64G\" or \"512M\", or \"\" for no limit")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size such as \"64G\" or \"512M\", or \"\" for no limit")
        return value
    if not isinstance(value, str):
        raise ValueError("a size such as \"64G\" or \"512M\", or \"\" for no limit")
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    if not text:
        return 0
    unit = text[-1] if text[-1] in _UNITS else ""
    number = text[:-1] if unit else text
    try:
        size = float(number)
    except ValueError:
        raise ValueError("a size such as \"64G\" or \"512M\", or \"\" for no limit") from None
    if size < 0 or size != size:
        raise ValueError("a size such as \"64G\" or \"512M\", or \"\" for no limit")
    return int(size * _UNITS[unit])


def check_weight(value):
    if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or 1 <= value <= 10000):
        raise ValueError("an integer from 1 to 10000 (100 is an equal share), or 0 for the default")
    return value or 100


def check_pids(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a number of processes, or 0 for no limit")
    return value


CHECKS = {"memory": parse_size, "cpu_weight": check_weight, "pids": check_pids}


def parse(table):
    """A [limits] table (or one user's) -> {key: value}, checked. Raises
    ValueError("key: what is allowed") for the first bad entry."""
    out = {}
    for key, raw in table.items():
        if key not in CHECKS:
            raise ValueError(f"{key}: unknown; allowed: {', '.join(KEYS)}")
        try:
            out[key] = CHECKS[key](raw)
        except ValueError as e:
            raise ValueError(f"{key} = {raw!r} is invalid; it must be {e}") from None
    return out


def for_user(defaults, overrides, user):
    """The user's limits: the defaults, with their own [limits.users.<name>] over them."""
    return Limits(**{**NONE._asdict(), **defaults, **overrides.get(user, {})})


def memory_limit(text):
    """A cgroup's memory.max (v2) or memory.limit_in_bytes (v1) -> bytes, 0 for none."""
    text = text.strip()
    if text == "max" or not text.lstrip("-").isdigit():
        return 0
    value = int(text)
    return 0 if value < 0 or value >= 1 << 62 else value  # v1's "none" is a page-rounded LONG_MAX


def v1_shares(weight):
    """cgroup v1 cpu.shares for a v2-style weight (100 -> 1024, the default)."""
    return max(2, weight * 1024 // 100)


def writes(limits, version):
    """[(controller, file, value)] that set `limits` on a user's cgroup, for
    cgroup `version` 1 or 2. "No limit" is written too, so a limit taken
    out of the config is lifted at the next `berth up`."""
    if version == 1:
        return [("memory", "memory.limit_in_bytes", str(limits.memory) if limits.memory else "-1"),
                ("cpu", "cpu.shares", str(v1_shares(limits.cpu_weight))),
                ("pids", "pids.max", str(limits.pids) if limits.pids else "max")]
    return [("memory", "memory.max", str(limits.memory) if limits.memory else "max"),
            ("cpu", "cpu.weight", str(limits.cpu_weight)),
            ("pids", "pids.max", str(limits.pids) if limits.pids else "max")]
