"""`berth slurm prolog|epilog|task-prolog`: the hooks as commands, with
their own config, logging and exit codes (hooks.py says what each does).

Exit codes are Slurm's to read: a non-zero Prolog or Epilog drains the
node, a non-zero TaskProlog cancels the task. So the Prolog and Epilog
exit 1 only when the node is broken (hooks.NodeBroken, a config that does
not load, not run as root), and the TaskProlog always exits 0.
"""

import logging
import os
import sys

from berth.core import config, logsetup
from berth.core.errors import BerthError
from berth.core.paths import SYSTEM_PATH
from berth.slurm import hooks, jobenv

log = logging.getLogger("berth.slurm")

HOOKS = ("prolog", "epilog", "task-prolog")


def main(hook, config_path=None, out=None, let_go=None, debug=False, environ=None):
    """Run `hook`; its exit code. `environ`: the job's environment (default:
    this process's, which the root hooks then scrub: they start programs)."""
    out = out or sys.stdout
    if environ is None:
        environ = dict(os.environ)
        if hook != "task-prolog":
            os.environ.clear()
            os.environ.update(PATH=SYSTEM_PATH, LANG="C.UTF-8")
    if hook == "task-prolog":
        return _task_prolog(config_path, environ, out)
    try:
        # The wrapper names the config; BERTH_CONFIG is never read here.
        cfg = config.load(config_path, environ={})
    except BerthError as e:
        logsetup.for_cli(None, debug)
        log.error("%s: the config does not load: %s", hook, e.one_line())
        return 1
    logsetup.for_cli(cfg, debug)
    try:
        if os.geteuid() != 0:
            raise hooks.NodeBroken(f"'berth slurm {hook}' needs root", hint="set SlurmdUser=root in slurm.conf")
        if hook == "prolog":
            hooks.prolog(cfg, jobenv.read(environ))
        else:
            hooks.epilog(cfg, jobenv.job_id(environ), environ.get("SLURM_JOB_USER", ""), let_go)
        return 0
    except hooks.NodeBroken as e:
        log.error("%s: this node cannot serve jobs: %s", hook, e.one_line())
        return 1
    except jobenv.BadJobEnvironment as e:
        # Not run by slurmd (by hand, or an old slurmd): no job to act for, no node fault.
        log.error("%s: %s; nothing done (slurmd sets it for its Prolog and Epilog)", hook, e)
        return 0
    except BerthError as e:
        log.error("%s of job %s: %s", hook, environ.get("SLURM_JOB_ID", "?"), e.one_line())
        return 0
    except Exception:
        # berth's own fault, not the node's: logged whole, and the node stays up.
        log.exception("%s of job %s: unexpected error", hook, environ.get("SLURM_JOB_ID", "?"))
        return 0


def _task_prolog(config_path, environ, out):
    try:
        cfg = config.load(config_path, environ={})
        for line in hooks.task_prolog(str(cfg.paths.run_dir), environ, os.getuid()):
            print(line, file=out)
    except Exception as e:  # a failing TaskProlog cancels the task: never
        print(f"berth: no job socket for this task ({type(e).__name__}: {e})", file=sys.stderr)
    return 0
