"""Where berth's login hook sits in a PAM stack, and whether a user's
variables can reach it. Pure: file texts in (through `read`), findings out.

pam_exec hands its program the whole PAM environment, and `berth pam` runs
as root. `pam_env.so user_readenv=1` (Debian's and Ubuntu's sshd have it)
copies the user's ~/.pam_environment into that environment: LD_PRELOAD acts
before Python starts. So berth's hook must run before every such line, at
open_session only (the environment at close_session still holds what was
read at open), and with the interpreter isolated (-I).
"""

import os
import re
from collections import namedtuple

PAM_DIR = "/etc/pam.d"

# kind: auth, account, password, session, or "@include" (module = the file);
# berth: the line lies in berth's marked block.
PamLine = namedtuple("PamLine", "file lineno kind control module args berth", defaults=(False,))

BEGIN, END = "# BEGIN berth", "# END berth"

Finding = namedtuple("Finding", "file lineno problem fix")

_TOKEN = re.compile(r"\[(?:[^\]\\]|\\.)*\]|\S+")


def parse(text, file):
    """The lines of one PAM file, comments and continuations handled as libpam does."""
    out = []
    lineno, pending, start, inside = 0, "", 0, False
    for raw in text.splitlines():
        lineno += 1
        if raw.startswith(BEGIN) or raw.startswith(END):
            inside = raw.startswith(BEGIN)
        line = raw.split("#", 1)[0]
        if not pending:
            start = lineno
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        tokens = _TOKEN.findall(line)
        if not tokens:
            continue
        if tokens[0] == "@include":
            if len(tokens) > 1:
                out.append(PamLine(file, start, "@include", "", tokens[1], (), inside))
            continue
        if len(tokens) < 3:
            continue
        kind = tokens[0].lstrip("-").lower()
        out.append(PamLine(file, start, kind, tokens[1], tokens[2], tuple(tokens[3:]), inside))
    return out


def service_path(name):
    return name if name.startswith("/") else os.path.join(PAM_DIR, name)


def stack(service, read, kinds=("auth", "session"), _seen=()):
    """The lines libpam runs for `kinds`, includes and substacks followed, in order."""
    path = service_path(service)
    if path in _seen:
        return
    text = read(path)
    if text is None:
        return
    for line in parse(text, path):
        if line.kind == "@include":
            yield from stack(line.module, read, kinds, (*_seen, path))
        elif line.kind in kinds:
            if line.control in ("include", "substack"):
                yield from stack(line.module, read, (line.kind,), (*_seen, path))
            else:
                yield line


def _module(line):
    return os.path.basename(line.module)


def reads_user_env(line):
    """pam_env reading ~/.pam_environment: its user_readenv option read as
    pam_env reads it (atoi of the value; the last one wins; off by default)."""
    if _module(line) != "pam_env.so":
        return False
    value = 0
    for arg in line.args:
        if arg.startswith("user_readenv="):
            value = _atoi(arg[len("user_readenv="):])
    return value != 0


def _atoi(text):
    digits = re.match(r"\s*[+-]?\d*", text).group().strip()
    return int(digits) if digits.lstrip("+-") else 0


def hook_command(line):
    """The argv pam_exec runs for this line, or None if it is not berth's hook."""
    if _module(line) != "pam_exec.so":
        return None
    args = list(line.args)
    while args and (args[0] in ("debug", "quiet", "quiet_log", "stdout", "seteuid", "expose_authtok")
                    or args[0].startswith(("log=", "type="))):
        args.pop(0)
    if "pam" not in args:
        return None
    before = args[:args.index("pam")]
    if any(os.path.basename(a) == "berth" for a in before) or before[-2:] == ["-m", "berth"]:
        return args
    return None


def hook_lines(service, read):
    return [line for line in stack(service, read, ("session",)) if hook_command(line) is not None]


def _hook_findings(line):
    found = []
    if "type=open_session" not in line.args:
        found.append(Finding(line.file, line.lineno,
                             "berth's hook runs at close_session too, when the PAM environment holds "
                             "what pam_env read from the user's files",
                             "berth install (its line has type=open_session)"))
    argv = hook_command(line)
    if "-I" not in argv[1:argv.index("pam")]:
        found.append(Finding(line.file, line.lineno,
                             "berth's hook does not run its interpreter isolated (-I): PYTHONPATH and "
                             "friends from the session would steer root",
                             "berth install (its line runs PYTHON -I -m berth pam)"))
    return found


def findings(service, read):
    """What lets a user's variables reach berth's hook in `service`; [] if fine
    (or if berth's hook is not in it)."""
    hooks = hook_lines(service, read)
    if not hooks:
        return []
    out = []
    for line in hooks:
        out += _hook_findings(line)
    # The auth stack's pam_env runs at pam_setcred, which sshd may call
    # before it opens the session.
    for line in stack(service, read, ("auth",)):
        if reads_user_env(line):
            out.append(_reader_finding(line, "in the auth stack, before any session"))
    for line in stack(service, read, ("session",)):
        if line == hooks[0]:
            break
        if reads_user_env(line):
            out.append(_reader_finding(line, "before berth's hook"))
    return out + jump_findings(service, read)


def jumps(control):
    """The numbers of lines a control like [success=2 default=ignore] skips."""
    return [int(v) for v in re.findall(r"=(\d+)", control)] if control.startswith("[") else []


def jump_findings(service, read):
    """Lines whose numeric jumps count berth's lines among those they skip:
    with berth's block in between, they would land elsewhere than meant."""
    lines = list(stack(service, read, ("session",)))
    out = []
    for i, line in enumerate(lines):
        if line.berth:
            continue
        skipped = lines[i + 1:i + 1 + max(jumps(line.control), default=0)]
        if any(s.berth for s in skipped):
            out.append(Finding(line.file, line.lineno,
                               f"line {line.lineno} of {line.file} jumps over lines ({line.control}) and berth's "
                               "block stands among them, so the jump no longer lands where it was meant to",
                               "move berth's block below where that jump lands, or the jump's target above "
                               "berth's block (then run berth install again)"))
    return out


def _reader_finding(line, where):
    return Finding(line.file, line.lineno,
                   f"line {line.lineno} of {line.file} reads users' ~/.pam_environment {where}, "
                   "so a user's LD_PRELOAD or PYTHONPATH would run as root in berth's hook",
                   "move berth's block above that line (berth install does), or drop user_readenv=1 from it")


def insertion_index(text, file, read):
    """Where berth's block goes in `file`: before the first line of its own
    (or the first include) that brings a user_readenv pam_env into the
    session stack; None means at the end."""
    for index, line in _top_level(text, file):
        if line.kind == "@include" or line.control in ("include", "substack"):
            kinds = ("session",)
            if any(reads_user_env(inner) for inner in stack(line.module, read, kinds, (file,))):
                return index
        elif line.kind == "session" and reads_user_env(line):
            return index
    return None


def _top_level(text, file):
    """(index into text.splitlines(), PamLine) for each line of the file itself."""
    lines = parse(text, file)
    return [(line.lineno - 1, line) for line in lines]


def services_including(name, services, read):
    """Which of `services` run `name`'s session lines (directly or not)."""
    target = service_path(name)
    found = []
    for service in services:
        path = service_path(service)
        if path == target:
            continue
        if any(line.file == target for line in stack(service, read, ("session",))):
            found.append(service)
    return found
