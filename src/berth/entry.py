"""The `berth` console script. `berth pam` runs at every login, so it goes
straight to the hook without loading the CLI (argparse, logging, ...)."""

import sys


def hook_options(args):
    """`pam [--config FILE] [--run-dir DIR]` as a dict, or None for anything else."""
    if args[:1] != ["pam"] or len(args) % 2 == 0:
        return None
    options = {}
    for flag, value in zip(args[1::2], args[2::2]):
        key = {"--config": "config_path", "--run-dir": "run_dir"}.get(flag)
        if key is None:
            return None
        options[key] = value
    return options


def task_prolog_config(args):
    """`slurm task-prolog [--config FILE]`, as its wrapper runs it before
    every task of a job: the config's path ("" for the default), or None."""
    if args[:2] != ["slurm", "task-prolog"] or len(args) not in (2, 4) or args[2:3] not in ([], ["--config"]):
        return None
    return args[3] if len(args) == 4 else ""


def main():
    options = hook_options(sys.argv[1:])
    if options is not None:
        from berth.login.hook import main as hook

        return hook(**options)
    config = task_prolog_config(sys.argv[1:])
    if config is not None:  # no argparse, no CLI: it runs before every task
        from berth.slurm.command import main as slurm_hook

        return slurm_hook("task-prolog", config or None)
    launched = prelaunch_up(sys.argv[1:])
    if launched is None:
        from berth.cli import main as cli

        return cli()
    with launched:  # undone unless `up` takes it over (it failed first, or never ran)
        from berth.cli import main as cli

        code = cli(prelaunched=launched)
    _exit_now(code)


def _exit_now(code):
    """A cold `berth up` is timed to the exit: the interpreter's teardown of
    what `up` loaded (iptc, ctypes, logging) is ~15 ms nobody needs. Output
    and logs are flushed first; nothing else is pending at this point."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def prelaunch_up(args):
    """`berth up USER` (as cli.fast_args reads it): the user's dockerd,
    launched from its plan before the CLI and the config are loaded."""
    import os

    from berth.core import paths, users

    if len(args) != 2 or args[0] != "up" or not users.is_valid_name(args[1]):
        return None
    from berth.lifecycle import prelaunch

    launched = prelaunch.launch(os.environ.get("BERTH_CONFIG") or paths.DEFAULT_CONFIG, args[1])
    if launched is not None:
        # A SIGTERM or SIGHUP from here on unwinds (the CLI installs the
        # same handlers later): what was launched is undone, not left running.
        import _signal  # the signal module's enums cost 4 ms here

        for number in (_signal.SIGTERM, _signal.SIGHUP):
            _signal.signal(number, _raise_exit)
    return launched


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)
