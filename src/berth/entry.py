"""The `berth` console script. `berth pam` runs at every login, so it goes
straight to the hook without loading the CLI (argparse, logging, ...)."""

import sys


def main():
    args = sys.argv[1:]
    if args == ["pam"] or (len(args) == 3 and args[0] == "pam" and args[1] == "--config"):
        from .pam import main as hook

        return hook(config_path=args[2] if len(args) == 3 else None)
    from .cli import main as cli

    return cli()
