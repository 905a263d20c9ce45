"""`berth install` / `berth uninstall`: the login hook's files on the host.

Planning is pure (what each file should contain, from the config and the
files' current text); applying writes atomically and keeps a backup of every
file it edits. What install adds is marked, so uninstall removes exactly that.
"""

import os
from dataclasses import dataclass

from berth.core import config
from berth.core.errors import BerthError, NotTrusted
from berth.core.fsutil import atomic_write, check_trusted_path
from berth.login import pamlayout

BEGIN = "# BEGIN berth"
END = "# END berth"
MARK = "(added by 'berth install')"

# The interpreter of the venv scripts/install.sh makes: the shipped pam/ files name it.
DEFAULT_PYTHON = "/opt/berth/bin/python"
ENV_CONF = "/etc/berth/pam_env.conf"
PROFILE = "/etc/profile.d/berth.sh"
CONFIG = "/etc/berth/berth.toml"
COMPLETION = "/usr/share/bash-completion/completions/berth"
LOGROTATE = "/etc/logrotate.d/berth"
CRON = "/etc/cron.d/berth"
REAP_SERVICE = "/etc/systemd/system/berth-reap.service"
REAP_TIMER = "/etc/systemd/system/berth-reap.timer"
SCHEDULES = {"cron": (CRON,), "systemd": (REAP_SERVICE, REAP_TIMER)}
# Slurm's hooks: slurm.conf takes a program's path without arguments, so
# each is a wrapper that runs `berth slurm <hook>` with the config named.
SLURM_DIR = "/usr/local/lib/berth/slurm"
SLURM_HOOKS = {"prolog": "Prolog", "epilog": "Epilog", "task-prolog": "TaskProlog"}


@dataclass(frozen=True)
class Change:
    path: str          # on the target system (before the --root prefix)
    content: str | None  # the file's new text; None removes the file
    summary: str
    mode: int = 0o644


def template(name):
    from importlib import resources

    return resources.files("berth").joinpath(f"data/{name}").read_text()


def pam_block(cfg, python, config_path=None, env_conf_path=ENV_CONF):
    """The PAM lines, running berth with `python` (the absolute path of the
    interpreter berth is installed for)."""
    arg = f" --config {config_path}" if config_path else ""
    return (template("pam-session").replace("@MIN_UID@", str(cfg.users.min_uid))
            .replace("@MAX_UID@", str(cfg.users.max_uid)).replace("@PYTHON@", python)
            .replace("@CONFIG_ARG@", arg).replace("@ENV_CONF@", env_conf_path)
            .replace("@RUN_DIR@", str(cfg.paths.run_dir)))


def env_conf(cfg):
    return template("pam_env.conf").replace("@RUN_DIR@", str(cfg.paths.run_dir))


def profile_script(cfg):
    return template("profile.sh").replace("@RUN_DIR@", str(cfg.paths.run_dir))


def strip_block(text):
    """The text without berth's marked block (and the blank line it added
    above itself when it was appended at the end)."""
    lines = text.splitlines(keepends=True)
    begin = next((i for i, line in enumerate(lines) if line.startswith(BEGIN)), None)
    if begin is None:
        return text
    end = next((i for i in range(begin, len(lines)) if lines[i].startswith(END)), len(lines) - 1)
    if end == len(lines) - 1 and begin > 0 and lines[begin - 1].strip() == "":
        begin -= 1
    return strip_block("".join(lines[:begin] + lines[end + 1:]))


def with_block(text, block, read=None, path="/etc/pam.d/sshd"):
    """`text` with berth's block: before the first line that brings a pam_env
    reading users' files into the session stack (and the comments just above
    it), else at the end. `read` gives the files that `text` includes."""
    base = strip_block(text)
    if base and not base.endswith("\n"):
        base += "\n"
    index = pamlayout.insertion_index(base, path, read or (lambda p: None))
    if index is None:
        return base + ("\n" if base else "") + block
    lines = base.splitlines(keepends=True)
    while index > 0 and lines[index - 1].lstrip().startswith("#"):
        index -= 1
    return "".join(lines[:index]) + block + "".join(lines[index:])


def check_interpreter(python):
    """The interpreter (and the berth it imports) that root will run at
    every login: refuse one a user could change.

    Raises:
        BerthError: it is missing, or some file or directory on its path, or
            on the berth package's, is not root's alone.
    """
    import subprocess

    if not (os.path.isabs(python) and os.access(python, os.X_OK)):
        raise BerthError(f"{python} is not an executable interpreter", hint="pass --python /opt/berth/bin/python")
    try:
        check_trusted_path(python)
        check_trusted_path(os.path.realpath(python))
        # Only now is it safe to run it (as root) and ask where berth lives.
        r = subprocess.run([python, "-I", "-c", "import berth, os; print(os.path.dirname(berth.__file__))"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
        if r.returncode != 0:
            raise BerthError(f"{python} cannot import berth", hint="install berth for it (pip install ...)")
        check_trusted_path(r.stdout.strip())
    except NotTrusted as e:
        raise BerthError(f"root would run {python} at every login, but {e.message}",
                         hint="install berth where only root can write (scripts/install.sh uses /opt/berth)") from e


def berth_command(python):
    """How root runs berth: the interpreter isolated from its environment."""
    return f"{python} -I -m berth"


def schedule_files(cfg, python, config_path=None, schedule="cron"):
    """The reaper's schedule: a cron file, or a systemd service + timer."""
    # cron's global --config goes before the command; the unit's too.
    arg = f" --config {config_path}" if config_path else ""
    berth = berth_command(python)
    names = {CRON: "cron", REAP_SERVICE: "berth-reap.service", REAP_TIMER: "berth-reap.timer"}
    return {path: template(names[path]).replace("@BERTH@", berth).replace("@CONFIG_ARG@", arg)
            .replace("@LOG_DIR@", str(cfg.paths.log_dir)) for path in SCHEDULES[schedule]}


def slurm_wrapper(hook, python, config_path=None):
    """The program slurm.conf's Prolog=, Epilog= or TaskProlog= names: the
    interpreter isolated, the config named (never BERTH_CONFIG from a
    task's environment), no PATH needed."""
    return (f"#!/bin/sh\n# berth: Slurm's {SLURM_HOOKS[hook]} {MARK}; slurm.conf takes a path, not arguments\n"
            f"exec {berth_command(python)} slurm {hook} --config {config_path or CONFIG}\n")


def slurm_wrappers(python, config_path=None):
    return {f"{SLURM_DIR}/{hook}": slurm_wrapper(hook, python, config_path) for hook in SLURM_HOOKS}


def slurm_conf_lines():
    """The lines a Slurm node's slurm.conf needs for berth's hooks."""
    return [f"{key}={SLURM_DIR}/{hook}" for hook, key in SLURM_HOOKS.items()] + ["PrologFlags=Alloc"]


def slurm_advice():
    """What `berth install --slurm` prints: the lines, and how a site keeps its own hooks."""
    return "\n".join(
        ["Add to slurm.conf on every node (then 'scontrol reconfigure'; docs/slurm.md):"]
        + [f"    {line}" for line in slurm_conf_lines()]
        + ["A site with prologs of its own: Prolog= and Epilog= take a glob (Prolog=/etc/slurm/prolog.d/*),",
           f"so link {SLURM_DIR}/prolog and epilog in there instead; TaskProlog= takes one program,",
           f"so yours runs {SLURM_DIR}/task-prolog and passes its output on."])


def pam_files(services):
    return [f"/etc/pam.d/{s}" for s in services]


def plan_install(cfg, python, read, services=("sshd",), config_path=None, schedule="cron", others=(),
                 env_conf_path=ENV_CONF, slurm=False):
    """Changes that make the host match; `read(path)` gives current text or None.
    `slurm`: Slurm's hooks too (slurm_wrappers).

    `others`: the other PAM services on the host, checked too when an edited
    file is included by them (common-session).

    Raises:
        BerthError: a PAM service is missing, or its layout would let users'
            variables reach berth's hook wherever the block stands.
    """
    changes = []
    block = pam_block(cfg, python, config_path, env_conf_path)
    planned = {}
    for path in pam_files(services):
        current = read(path)
        if current is None:
            raise BerthError(f"{path} does not exist",
                             hint="name an existing PAM service (--pam-service), e.g. sshd or common-session")
        planned[path] = with_block(current, block, read, path)
    after = lambda p: planned.get(p, read(p))  # noqa: E731 -- the host as it will be
    for path in planned:
        name = os.path.basename(path)
        for service in (name, *pamlayout.services_including(name, others, after)):
            for finding in pamlayout.findings(service, after):
                raise BerthError(f"cannot install berth's hook safely: {finding.problem}", hint=finding.fix)
    for path, wanted in planned.items():
        if wanted != read(path):
            changes.append(Change(path, wanted, f"add berth's session lines to {path}"))
    files = {env_conf_path: env_conf(cfg), PROFILE: profile_script(cfg), COMPLETION: template("berth.bash"),
             LOGROTATE: template("logrotate").replace("@LOG_DIR@", str(cfg.paths.log_dir)),
             **schedule_files(cfg, python, config_path, schedule)}
    for path, text in files.items():
        if read(path) != text:
            changes.append(Change(path, text, f"write {path}"))
    if slurm:
        changes += [Change(path, text, f"write {path}", 0o755)
                    for path, text in slurm_wrappers(python, config_path).items() if read(path) != text]
    # A host that changed from cron to systemd (or back) keeps one schedule.
    for other in SCHEDULES:
        if other != schedule:
            changes += [Change(p, None, f"remove {p}") for p in SCHEDULES[other] if written_by_berth(read(p))]
    if read(CONFIG) is None and config_path is None:
        changes.append(Change(CONFIG, config.example_text(), f"write the default config {CONFIG}"))
    return changes


def plan_uninstall(read, services=("sshd",)):
    changes = []
    for path in pam_files(services):
        current = read(path)
        if current is not None and BEGIN in current:
            changes.append(Change(path, strip_block(current), f"remove berth's session lines from {path}"))
    for path in (ENV_CONF, PROFILE, COMPLETION, LOGROTATE, CRON, REAP_SERVICE, REAP_TIMER, *slurm_wrappers("")):
        if written_by_berth(read(path)):
            changes.append(Change(path, None, f"remove {path}"))
    return changes


def written_by_berth(text):
    """berth's mark on the first line (a wrapper's second: its first is #!)."""
    return bool(text) and any(MARK in line for line in text.splitlines()[:2])


class Host:
    """Reads and writes the target system's files, under `root` (tests use a temp dir)."""

    def __init__(self, root="/"):
        self.root = root

    def real(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def read(self, path):
        try:
            with open(self.real(path)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def pam_services(self):
        try:
            return sorted(n for n in os.listdir(self.real(pamlayout.PAM_DIR)) if not n.endswith(".berth-backup"))
        except FileNotFoundError:
            return []

    def apply(self, change):
        path = self.real(change.path)
        if change.content is None:
            os.unlink(path)
            return
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.exists(path) and change.path.startswith("/etc/pam.d/"):
            backup = path + ".berth-backup"
            if not os.path.exists(backup):
                with open(path, "rb") as src:
                    atomic_write(backup, src.read(), mode=0o644)
        atomic_write(path, change.content, mode=change.mode)


def describe(change):
    """What a dry run prints for one change."""
    if change.content is None:
        return f"would {change.summary}"
    if change.path.startswith("/etc/pam.d/"):
        block = change.content[change.content.index(BEGIN):] if BEGIN in change.content else ""
        if not block:
            return f"would {change.summary}"
        return f"would {change.summary}:\n" + "".join(f"    {line}" for line in block.splitlines(keepends=True))
    return f"would {change.summary} ({len(change.content.splitlines())} lines)"


def apply(host, changes, command, use_systemd):
    """Carry out `changes` on `host`, with the reaper timer's systemctl steps
    where systemd runs; yields a line per step done."""
    timer = os.path.basename(REAP_TIMER)
    if use_systemd and command == "uninstall":
        systemctl("disable", "--now", timer)
    for change in changes:
        host.apply(change)
        yield change.summary[0].upper() + change.summary[1:]
    if use_systemd and changes:
        systemctl("daemon-reload")
        if command == "install":
            systemctl("enable", "--now", timer)
            yield f"enabled {timer}"


def systemctl(*args):
    import subprocess

    r = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if r.returncode != 0 and args[0] != "disable":  # disabling what is gone is fine
        raise BerthError(f"systemctl {' '.join(args)} failed: {r.stderr.strip()}",
                         hint="check 'systemctl status berth-reap.timer'")
