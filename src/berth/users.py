"""Which names berth serves: real users at or above min_uid, nothing else."""

import pwd
import re
from collections import namedtuple

from .errors import UserRefused

# Debian's useradd default NAME_REGEX, plus upper case; no '/', no spaces, no
# leading '-' or '.', so a name is always safe as one path component.
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


Account = namedtuple("Account", "name uid gid home")


def is_valid_name(name):
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def check_name(name):
    if not is_valid_name(name):
        raise UserRefused(f"{name!r} is not a valid user name",
                          hint="use a login name such as alice (letters, digits, _ and -, at most 32)")
    return name


def resolve(name, min_uid):
    check_name(name)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserRefused(f"user {name!r} does not exist",
                          hint=f"check the name, or create the account first (adduser {name})") from None
    if entry.pw_uid == 0:
        raise UserRefused(f"{name!r} is root; berth never gives root a daemon of its own",
                          hint="use the system Docker for root, and berth for people")
    if entry.pw_uid < min_uid:
        raise UserRefused(f"user {name!r} has uid {entry.pw_uid}, below [users].min_uid = {min_uid}",
                          hint="system accounts get no daemon; lower min_uid in the config if this is a person")
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
