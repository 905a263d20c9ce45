"""Which dockerd a `berth up` ends with, decided from what it found (pure).

`up` gathers the facts under the user's lock: berth's record of the
dockerd that runs, berth's own socket beside the user's, the dockerd a
prelaunch launched from the last start's plan (prelaunch.py) and whether
it runs what this start would run. `decide` says what becomes of them:

  warm      a dockerd runs: it stays (a warm `up` repairs only around it)
  restart   a dockerd runs that an older berth started without a socket of
            berth's own: it serves the user's socket itself, which in
            hardened mode is the way round the policy proxy (an upgrade
            guard); it is stopped and a new one starts
  adopt     the prelaunched dockerd runs what this start would: taken over
  replace   the prelaunched dockerd runs an outdated plan, or without the
            user's mapping: it is stopped and a new one starts
  start     nothing runs (the prelaunched one, if any, exited at start)
"""

from dataclasses import dataclass

WARM, RESTART, ADOPT, REPLACE, START = "warm", "restart", "adopt", "replace", "start"


@dataclass(frozen=True)
class Found:
    user: str
    running: bool                 # a dockerd of the user's runs, by berth's record
    own_socket: bool = True       # it has berth's own socket beside the user's
    mode: str = "hardened"        # the mode it runs in
    wanted_mode: str = "hardened"  # the config's
    prelaunched: bool = False     # a dockerd was launched from the plan for this `up`
    is_prelaunched: bool = False  # the one that runs is that one (its own socket may not be there yet)
    as_planned: bool = False      # it runs what this start would: the same plan, daemon.json and mapping


@dataclass(frozen=True)
class Start:
    action: str        # warm | restart | adopt | replace | start
    reason: str = ""   # for the log, where there is one worth a line
    warn: bool = False

    @property
    def starts(self):
        """A dockerd is started (or taken over) by this `up`: its rollback undoes it."""
        return self.action != WARM


def decide(found):
    user = found.user
    if found.running and found.is_prelaunched:
        if found.as_planned:
            return Start(ADOPT, "before the config was read")
        return Start(REPLACE, f"{user}'s dockerd was launched from an outdated plan; starting it again")
    if found.running and not found.own_socket:
        return Start(RESTART, f"{user}'s daemon was started without berth's own socket (an older berth); "
                              "restarting it", warn=True)
    if found.running:
        if found.mode != found.wanted_mode:
            return Start(WARM, f"{user}'s daemon runs in {found.mode} mode; the config's {found.wanted_mode} mode "
                               f"applies from its next start (berth down {user})", warn=True)
        return Start(WARM)
    if found.prelaunched:
        return Start(START, f"the dockerd launched for {user} from its plan exited at start; starting it again",
                     warn=True)
    return Start(START)


def launched_elsewhere(plan, run_dir, lock, identity):
    """The prelaunched dockerd's plan names other places than the config
    `up` read (the config changed in between): what was launched goes, and
    `up` takes the config's own lock."""
    return plan["identity"] != identity or plan["run_dir"] != run_dir or plan["lock"] != lock
