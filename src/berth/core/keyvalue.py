"""The one format of berth's records on disk: `key=value` lines.

The daemon record, the shared containerd's record, the launch plan, the
login digest and the proxy's spec are all written and read here. Not JSON:
json imports re, and re enum, which is most of a warm login's time.
"""


def render(fields):
    """`fields` (an ordered mapping) as lines; ValueError for a key or a
    value that would read back as something else."""
    out = []
    for key, value in fields.items():
        value = str(value)
        if not key or "=" in key or "\n" in key or "\n" in value:
            raise ValueError(f"a record's {key!r} cannot be written as a line")
        out.append(f"{key}={value}\n")
    return "".join(out)


def parse(raw):
    """The fields of `raw` (bytes or text): ValueError for text that is not
    lines of key=value (a record cut short, or not berth's)."""
    text = raw.decode() if isinstance(raw, (bytes, bytearray)) else raw  # UnicodeDecodeError is a ValueError
    return dict(line.split("=", 1) for line in text.splitlines() if line)
