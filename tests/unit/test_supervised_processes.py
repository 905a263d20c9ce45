"""Root's long-lived processes (a user's dockerd, the policy proxy, the
shared containerd) are started, signalled and run as systemd units in one
place: core/supervision.py. Every module is read with `ast`; a start
(systemd-run, systemctl, a spawn, a fork, Popen) or a signal anywhere else
must be one of the exceptions below, each with the reason it is not one of
those processes."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "..", "src", "berth")
SUPERVISOR = "core/supervision.py"

# What starts or signals a process: os.<name>(...), subprocess.Popen(...),
# supervision.spawn(...), and the command names systemd-run and systemctl.
CALLS = {"os": {"kill", "killpg", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve", "execvp",
                "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnl", "spawnle",
                "system", "popen"},
         "subprocess": {"Popen"}, "supervision": {"spawn"}, "pty": {"fork", "spawn"}}
COMMANDS = {"systemd-run", "systemctl"}

EXCEPTIONS = {
    # (module, what): why it is not a supervised process
    ("login/hook.py", "os.fork"): "the PAM hook forks the berth that runs `up`, so the login goes on",
    ("proxy/pins.py", "os.fork"): "a short-lived child that resolves a bind source as the user (fsuid, groups)",
    ("proxy/pins.py", "os.kill"): "that child, stuck on a hung file system",
    ("proxy/containercopy.py", "os.fork"): "a short-lived child that copies in a container's namespaces",
    ("proxy/handler.py", "os.kill"): "that copy child, when its client went away",
    ("daemon/nodevices.py", "os.execv"): "as a script it execs the unit's dockerd (the supervisor's ExecStart)",
    ("daemon/cgroups.py", "systemctl"): "limits on a user's slice, and the slice removed: no process of berth's",
    ("slurm/jobcgroup.py", "systemctl"): "limits on a Slurm job's slice, and the slice removed: no process of berth's",
    ("ops/install.py", "systemctl"): "the reaper's timer, a unit berth installs for good (enable/disable)",
    ("ops/doctor.py", "systemctl"): "whether the reaper's timer is enabled",
}


def _found(path):
    """(what, line) for each start, signal or unit command in a module."""
    tree = ast.parse(open(path).read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) \
                and node.func.attr in CALLS.get(node.func.value.id, ()):
            found.append((f"{node.func.value.id}.{node.func.attr}", node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "subprocess", "pty", "berth.core.supervision"):
            short = node.module.rsplit(".", 1)[-1]
            found += [(f"{short}.{a.name}", node.lineno) for a in node.names if a.name in CALLS.get(short, ())]
        elif isinstance(node, ast.Constant) and node.value in COMMANDS:
            found.append((node.value, node.lineno))
    return found


def _modules():
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, PACKAGE), path


def test_only_the_supervisor_starts_or_signals_roots_processes():
    wrong, used = [], set()
    for module, path in _modules():
        if module == SUPERVISOR:
            continue
        for what, line in _found(path):
            if (module, what) in EXCEPTIONS:
                used.add((module, what))
            else:
                wrong.append(f"{module}:{line}: {what} (start and stop it through berth.core.supervision)")
    assert wrong == [], "\n".join(wrong)
    assert used == set(EXCEPTIONS), f"exceptions no longer needed: {set(EXCEPTIONS) - used}"


def test_the_supervisor_does_all_of_it():
    found = {what for what, _ in _found(os.path.join(PACKAGE, SUPERVISOR))}
    assert {"os.kill", "os.posix_spawn", "os.fork", "os.execve", "systemd-run", "systemctl"} <= found


def test_the_check_sees_each_form(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os, subprocess\nfrom os import kill\nfrom berth.core.supervision import spawn\n"
                    "def f(p):\n    os.kill(p, 9)\n    subprocess.Popen(['x'])\n"
                    "    subprocess.run(['systemd-run', '--unit=x'])\n    subprocess.run(['true'])\n")
    assert sorted(w for w, _ in _found(str(path))) == ["os.kill", "os.kill", "subprocess.Popen",
                                                     "supervision.spawn", "systemd-run"]
