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


def main():
    options = hook_options(sys.argv[1:])
    if options is not None:
        from .pam import main as hook

        return hook(**options)
    from .cli import main as cli

    return cli()
