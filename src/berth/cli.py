"""The `berth` command. The only place (with the PAM hook) that configures
logging, turns errors into one line and an exit code, and exits."""

import json
import logging
import os
import pwd
import signal
import sys
from collections import namedtuple
from types import SimpleNamespace

from berth.core import config, logsetup, users
from berth.core.errors import BerthError, need_root

log = logging.getLogger("berth")

EXAMPLES = {
    "up": "berth up alice",
    "down": "berth down alice\n  berth down --purge alice     # deletes alice's images and volumes too",
    "reap": "berth reap --dry-run",
    "status": "berth status            # all users\n  berth status alice --json",
    "top": "sudo berth top --sort memory",
    "env": "eval \"$(berth env)\"     # DOCKER_HOST for the current user",
    "doctor": "sudo berth doctor",
    "demo": "sudo berth demo",
    "logs": "sudo berth logs alice -n 50 -f",
    "refusals": "berth refusals            # yours: what the policy proxy refused you lately, and why\n"
                "  sudo berth refusals alice --json",
    "proxy": "/opt/berth/bin/python -I -m berth proxy --run-dir /run/berth   # as berth up starts it",
    "config": "berth config --example > /etc/berth/berth.toml && berth config --check",
    "install": "sudo berth install --dry-run && sudo berth install\n"
               "  sudo berth install --slurm     # a Slurm node: the hooks too, and the slurm.conf lines to add",
    "uninstall": "sudo berth uninstall",
    "slurm": "Prolog=/usr/local/lib/berth/slurm/prolog   # in slurm.conf: the wrapper 'berth install --slurm' "
             "writes,\n  # which runs: berth slurm prolog --config /etc/berth/berth.toml",
    "pam": "session optional pam_exec.so quiet stdout type=open_session /opt/berth/bin/python -I -m berth pam\n"
           "  # in /etc/pam.d/sshd, above any pam_env user_readenv=1 line (berth install places it)",
}


def build_parser():
    import argparse  # not for `berth up USER` (fast_args)

    p = argparse.ArgumentParser(
        prog="berth",
        description="A Docker daemon of your own on a shared box: per-user dockerd, bridge, "
                    "subnet and net container.",
        epilog="Example: berth up alice && sudo -u alice DOCKER_HOST=unix:///run/berth/alice/docker.sock docker ps")
    p.add_argument("--config", metavar="FILE",
                   help=f"config file (default: ${config.ENV_VAR} or {config.DEFAULT_PATH})")
    p.add_argument("--debug", action="store_true", help="log debug detail and show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog="Example:\n  " + EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    c = command("up", "bring a user's own Docker daemon up (idempotent)")
    c.add_argument("user")
    c = command("down", "stop a user's daemon, remove their bridge and rules; data and subnet are kept")
    c.add_argument("user")
    c.add_argument("--purge", action="store_true",
                   help="also delete the user's images, containers, volumes and build cache, and release their subnet")
    c.add_argument("--yes", action="store_true", help="with --purge: do not ask for confirmation")
    c = command("reap", "take idle users down (run from cron); say why each other user is kept")
    c.add_argument("--dry-run", action="store_true", help="say who would be reaped and why, change nothing")
    c.add_argument("--user", help="look at this user only")
    c = command("status", "show every user's daemon, or one user's in detail")
    c.add_argument("user", nargs="?")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = command("top", "every user's CPU, memory, disk and GPUs, refreshed like top")
    c.add_argument("--sort", choices=("cpu", "memory", "disk", "gpu", "user"), default="cpu",
                   help="biggest first (default: cpu)")
    c.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    c.add_argument("-n", "--iterations", type=int, default=0, help="stop after this many (default: until ^C)")
    c = command("env", "print the shell line that points docker at a user's daemon")
    c.add_argument("user", nargs="?", help="default: the user running the command")
    for name, text in (("install", "put the login hook in place: PAM lines, pam_env conf, profile.d script, config"),
                       ("uninstall", "remove exactly what 'berth install' added (the config is kept)")):
        c = command(name, text)
        c.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
        c.add_argument("--pam-service", action="append", metavar="NAME",
                       help="PAM service file(s) under /etc/pam.d to edit (default: sshd; "
                            "common-session covers every login)")
        c.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests install into a temp dir
        if name == "install":
            # tests: a pam_env conf outside /etc, for a PAM dir mounted privately
            c.add_argument("--env-conf", default=None, help=argparse.SUPPRESS)
            c.add_argument("--python", metavar="PATH",
                           help="the interpreter berth is installed for, which the PAM line runs "
                                "(default: this one)")
            c.add_argument("--slurm", action="store_true",
                           help="a Slurm node: also Slurm's hooks (wrappers under /usr/local/lib/berth/slurm), "
                                "and print the slurm.conf lines to add")
    c = command("pam", "the PAM session hook (run by pam_exec at session open; reads PAM_USER and PAM_TYPE); "
                       "always exits 0")
    c.add_argument("--config", dest="pam_config", metavar="FILE", help=argparse.SUPPRESS)
    c.add_argument("--run-dir", metavar="DIR", help=argparse.SUPPRESS)
    c = command("slurm", "Slurm's hooks on a node: prolog and epilog (root, from slurmd), task-prolog (as the "
                         "job's user); see docs/slurm.md")
    c.add_argument("hook", choices=("prolog", "epilog", "task-prolog"))
    c.add_argument("--config", dest="slurm_config", metavar="FILE", help="config file (default: "
                   f"{config.DEFAULT_PATH}; BERTH_CONFIG is not read)")
    c = command("proxy", "the policy proxy in front of hardened users' daemons (berth up starts it); "
                         "runs until SIGTERM")
    c.add_argument("--run-dir", required=True, metavar="DIR", help="berth's run dir ([paths].run_dir)")
    c = command("logs", "show a user's dockerd log")
    c.add_argument("user")
    c.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    c.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    c = command("refusals", "show what the policy proxy refused you lately: when, the request (method and path), "
                            "why, and what to do instead")
    c.add_argument("user", nargs="?", help="root only: that user's (default: everyone's for root, yours otherwise)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = command("demo", "show the idea end to end with two throwaway users, then clean up")
    c.add_argument("--keep", action="store_true", help="leave the two users and their daemons in place")
    c = command("doctor", "check the host and the install; one line per check, each problem with its fix")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests check an install in a temp dir
    c = command("config", "show the example config or check the current one")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--example", action="store_true", help="print a commented example config")
    g.add_argument("--check", action="store_true", help="validate the config and print the result")
    return p


def _raise_exit(signum, frame):
    # SystemExit unwinds through the ExitStacks, so a half-done `up` is
    # rolled back on Ctrl-C, SIGTERM or a dropped terminal too.
    raise SystemExit(128 + signum)


# --- one handler per command, in the order of the subcommands ---------------

def _up(args, cfg, out):
    from berth.lifecycle import logindigest
    from berth.lifecycle.up import up

    r = up(cfg, args.user, prelaunched=args.prelaunched, launch_key=args.config_identity)
    # Where the next `berth up` finds the run dir (and so the launch plan) without the config;
    # only for a config a user came up with.
    logindigest.write(args.config_path, cfg, args.config_identity)
    how = f"started in {r.seconds:.2f} s" if r.started else "already running"
    print(f"{r.user} is up ({how}): block {r.block} on bridge {r.bridge}, dockerd pid {r.pid}, "
          f"net container {r.net_ip or '-'}", file=out)
    if r.mode != cfg.security.mode:
        print(f"note: it runs in {r.mode} mode; the config's {cfg.security.mode} mode applies from its next "
              f"start (berth down {r.user})", file=out)
    print(f"export DOCKER_HOST={r.docker_host}", file=out)


def _down(args, cfg, out):
    if args.purge:
        return _purge(args, cfg, out)
    from berth.lifecycle.down import down

    r = down(cfg, args.user)
    what = "dockerd stopped" if r.was_running else "dockerd was not running"
    print(f"{r.user} is down: {what}, {r.rules_removed} rule(s) removed, "
          f"bridge {'removed' if r.bridge_removed else 'absent'}; data and subnet kept", file=out)


def _purge(args, cfg, out):
    from berth.core import paths
    from berth.lifecycle.down import purge

    users.check_name(args.user)
    where = os.path.dirname(paths.for_user(cfg, args.user).data_root)
    if not args.yes:
        if not sys.stdin.isatty():
            raise BerthError(f"refusing to delete {args.user}'s data without confirmation",
                             hint=f"run it on a terminal, or add --yes: berth down --purge --yes {args.user}")
        answer = input(f"This deletes {args.user}'s images, containers, volumes and build cache ({where}) "
                       f"and releases their subnet. Type the user name to confirm: ")
        if answer.strip() != args.user:
            print("nothing deleted", file=out)
            return
    released = purge(cfg, args.user)
    print(f"{args.user} is purged: {where} deleted" + (", subnet released" if released else ""), file=out)


def _reap(args, cfg, out):
    from berth.ops import reaper

    if args.user:
        users.check_name(args.user)
    outcomes = reaper.reap_pass(cfg, only=args.user, dry_run=args.dry_run)
    for o in outcomes:
        print(reaper.render(o, args.dry_run), file=out)
    if not outcomes:
        print("no berth users", file=out)


def _top(args, cfg, out):
    import time

    from berth.ops import status

    if args.interval <= 0:
        raise BerthError("--interval must be more than 0 seconds", hint="e.g. berth top --interval 2")
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    shown = 0
    while True:
        rows, table = status.collect(cfg)
        text = status.render_table(cfg, status.sort_rows(rows, args.sort), table, status.proxy_status(cfg)
                                   if table is not None else None,
                                   status.containerd_status(cfg) if table is not None else None)
        stamp = time.strftime("%H:%M:%S")
        print(f"{clear}berth top — {stamp}, sorted by {args.sort}, every {args.interval:g} s (^C to stop)\n{text}",
              file=out, flush=True)
        shown += 1
        if args.iterations and shown >= args.iterations:
            return 0
        time.sleep(args.interval)


def _status(args, cfg, out):
    from berth.ops import status

    if args.user:
        users.check_name(args.user)
    rows, table = status.collect(cfg, only=args.user)
    proxy = status.proxy_status(cfg) if table is not None else None  # root only
    shared = status.containerd_status(cfg) if table is not None else None
    if args.json:
        print(json.dumps(status.to_json(cfg, rows, table, proxy, shared), indent=2), file=out)
    elif args.user:
        print(status.render_detail(rows[0]), file=out)
    else:
        print(status.render_table(cfg, rows, table, proxy, shared), file=out)


def _env(args, cfg, out):
    from berth.core import paths

    name = args.user or pwd.getpwuid(os.getuid()).pw_name
    account = users.resolve(name, cfg.users.min_uid, cfg.users.max_uid)
    print(f"export DOCKER_HOST={paths.for_user(cfg, account.name).docker_host}", file=out)


def _install(args, cfg, out):
    from berth.daemon.supervisor import systemd_booted
    from berth.ops import install

    host = install.Host(args.root)
    services = tuple(args.pam_service or ("sshd",))
    # Where systemd runs, the reaper gets a timer; elsewhere a cron file.
    use_systemd = args.root == "/" and systemd_booted()
    if args.command == "install":
        config_path = args.config or os.environ.get(config.ENV_VAR) or None
        python = args.python or _this_python()
        install.check_interpreter(python)
        changes = install.plan_install(cfg, python, host.read, services, config_path,
                                       schedule="systemd" if use_systemd else "cron", others=host.pam_services(),
                                       env_conf_path=args.env_conf or install.ENV_CONF, slurm=args.slurm)
    else:
        changes = install.plan_uninstall(host.read, services)
    if args.dry_run:
        for change in changes:
            print(install.describe(change), file=out)
    else:
        for line in install.apply(host, changes, args.command, use_systemd):
            print(line, file=out)
    if not changes:
        print(f"nothing to do: berth is {'already' if args.command == 'install' else 'not'} installed", file=out)
    elif args.command == "uninstall" and not args.dry_run:
        print(f"kept {install.CONFIG} and the users' data; remove them by hand if you want them gone", file=out)
    if args.command == "install" and args.slurm:
        print(install.slurm_advice(), file=out)


def _pam(args, cfg, out):
    from berth.login import hook

    return hook.main(out=out, config_path=args.pam_config or args.config, run_dir=args.run_dir)


def _slurm(args, cfg, out):
    from berth.slurm import command

    def let_go(cfg, name):  # the Epilog's: the reaper's rule (not imported for the others)
        from berth.ops import reaper

        return reaper.reconsider(cfg, name)

    return command.main(args.hook, args.slurm_config or args.config, out, let_go=let_go, debug=args.debug)


def _proxy(args, cfg, out):
    from berth.proxy import service

    return service.main(args.run_dir)


def _logs(args, cfg, out):
    from berth.core import paths
    from berth.ops import logs

    users.check_name(args.user)
    if args.lines is not None and args.lines < 0:
        raise BerthError("-n takes a number of lines, 0 or more", hint="e.g. berth logs alice -n 50")
    logs.show(paths.for_user(cfg, args.user).log_file, args.user, args.lines, args.follow, out)


def _refusals(args, cfg, out):
    from berth.proxy import refusals

    if os.geteuid() != 0:
        me = pwd.getpwuid(os.getuid()).pw_name
        if args.user not in (None, me):
            raise BerthError(f"only root can see {args.user}'s refusals",
                             hint=f"berth refusals (yours), or sudo berth refusals {args.user}")
        doc = _own_refusals(cfg, me)
    else:
        if args.user:
            users.check_name(args.user)
        doc = _any_refusals(cfg, args.user)
    if args.json:
        print(json.dumps(doc if doc is not None else refusals.document([]), indent=2), file=out)
    elif doc is None:
        print("no refusals: your daemon runs in trusted mode, where berth refuses nothing", file=out)
    else:
        print(refusals.render(doc), file=out)


def _own_refusals(cfg, name):
    """A user's refusals, from the proxy on their own socket (it answers
    there for them alone); None where dockerd itself serves it (trusted mode)."""
    from berth.core import paths
    from berth.daemon import engine
    from berth.proxy import refusals

    sock = paths.for_user(cfg, name).socket
    try:
        status, body = engine.request(sock, refusals.PATH, timeout=5.0)
    except OSError as e:
        raise BerthError(f"nothing answers on your Docker socket {sock} ({e.strerror or e})",
                         hint="log in again to start your daemon; refusals are kept while the policy proxy runs") \
            from None
    if status == 404:  # dockerd's own answer: no proxy in front of it
        return None
    if status != 200:
        raise BerthError(f"your Docker socket answered {status} to {refusals.PATH}",
                         hint="ask your administrator to run 'berth up' with this berth")
    return json.loads(body)


def _any_refusals(cfg, name):
    """Root: one user's refusals, or everyone's, on the proxy's control socket."""
    from berth.proxy import control

    try:
        return control.refusals(cfg.paths.run_dir, name)
    except OSError:
        raise BerthError("the policy proxy is not running, so it keeps no refusals",
                         hint="'berth up USER' starts it; it keeps refusals from then on") from None
    except control.ProxyError:
        raise BerthError(f"the policy proxy does not serve {name}",
                         hint="'berth status' shows who is up; in trusted mode berth refuses nothing") from None


def _demo(args, cfg, out):
    from berth.ops.demo import Demo

    Demo(cfg, out, keep=args.keep).run()


def _doctor(args, cfg, out):
    from berth.ops import doctor

    try:
        cfg, config_error = config.load(args.config), None
    except BerthError as e:  # reported as a check; the others run on the defaults
        cfg, config_error = config.Config(), e
    checks = doctor.run(cfg, args.root, _this_python(), config_error)
    failed = any(c.level == doctor.FAIL for c in checks)
    if args.json:
        print(json.dumps({"checks": [c.to_json() for c in checks], "ok": not failed}, indent=2), file=out)
    else:
        for c in checks:
            print(doctor.render(c), file=out)
    return 1 if failed else 0


def _config(args, cfg, out):
    if args.example:
        out.write(config.example_text())
        return
    where = cfg.source if cfg.source != "(defaults)" else f"no config at {config.config_path()}, defaults"
    print(f"{where}: ok (pool {cfg.network.pool}, /{cfg.network.block_prefix} blocks, "
          f"state in {cfg.paths.state_dir})", file=out)


def _this_python():
    """The interpreter running this berth (a venv's, not the one it links to)."""
    return os.path.abspath(sys.executable)


# handler; loads the config first (doctor reports a bad one as a check);
# needs root (and why), checked before anything else is done
Command = namedtuple("Command", "handler needs_config root_for")

COMMANDS = {
    "up": Command(_up, True, "it makes bridges, firewall rules and daemons"),
    "down": Command(_down, True, "it stops daemons and removes bridges and firewall rules"),
    "reap": Command(_reap, True, "it stops other users' daemons"),
    "status": Command(_status, True, None),
    "top": Command(_top, True, None),
    "env": Command(_env, True, None),
    "install": Command(_install, True, "it edits PAM files and writes under /etc"),
    "uninstall": Command(_install, True, "it edits PAM files and removes files under /etc"),
    "pam": Command(_pam, False, None),  # loads its own config and never fails a login
    "proxy": Command(_proxy, False, None),  # a service: says itself that it needs root
    "slurm": Command(_slurm, False, None),  # slurmd's hooks: their own config, logging and exit codes
    "logs": Command(_logs, True, "dockerd logs are root's"),
    "refusals": Command(_refusals, True, None),  # a user sees their own, root anyone's
    "demo": Command(_demo, True, "it makes users, bridges, firewall rules and daemons"),
    "doctor": Command(_doctor, False, "it reads iptables, PAM files and berth's state"),
    "config": Command(_config, True, None),
}


def run(args, cfg, out):
    command = COMMANDS[args.command]
    if command.root_for and args.root_check:
        need_root(args.command, command.root_for)
    return command.handler(args, cfg, out) or 0


def fast_args(argv):
    """`berth up USER`, as every script and cold login path runs it, read
    without argparse: importing it and building the parser is 27 ms of a
    cold start that should beat the seed's shell sequence. Anything else
    (a flag, --help, a typo) goes through argparse as usual."""
    if len(argv) == 2 and argv[0] == "up" and users.is_valid_name(argv[1]):
        return SimpleNamespace(command="up", user=argv[1], config=None, debug=False)
    return None


def main(argv=None, out=None, prelaunched=None):
    """`prelaunched`: for `berth up USER`, the dockerd entry.py launched
    before this module was even imported (prelaunch.py), for `up`."""
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else argv
    args = fast_args(argv) or build_parser().parse_args(argv)
    args.prelaunched = prelaunched if args.command == "up" else None
    if args.command == "up":
        # Taken before the config is read: a file changed meanwhile leaves no plan that names it.
        from berth.lifecycle import logindigest

        args.config_path = args.config or config.config_path()
        args.config_identity = logindigest.identity(args.config_path)
    # install into a scratch root (tests) needs no root; doctor always does
    args.root_check = args.command == "doctor" or os.path.realpath(getattr(args, "root", "/")) == "/"
    if args.command in ("pam", "proxy", "slurm"):  # their own config, logging and signals
        return COMMANDS[args.command].handler(args, None, out)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    cfg, log_path, logging_ready = None, None, False
    try:
        if COMMANDS[args.command].needs_config and not (args.command == "config" and args.example):
            cfg = config.load(args.config)
        log_path = logsetup.for_cli(cfg, args.debug)
        logging_ready = True
        return run(args, cfg, out)
    except BerthError as e:
        if not logging_ready:  # a config that did not load: the terminal only
            logsetup.for_cli(None, args.debug)
        log.debug("failed", exc_info=True)
        logging.getLogger("berth.cli").info("%s failed: %s", args.command, e.one_line())
        print(f"berth: {e.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("berth: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the one place that catches everything: no traceback for people
        if not logging_ready:
            logsetup.for_cli(None, args.debug)
        log.error("unexpected error in %s", args.command, exc_info=True)
        where = log_path or "the output of --debug"
        print(f"berth: unexpected error ({type(e).__name__}: {e}); details in {where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
