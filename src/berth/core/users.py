"""Which names berth serves: real users with a uid in [min_uid, max_uid], nothing else."""

import pwd
from collections import namedtuple

from berth.core.errors import UserRefused
from berth.core.paths import OWN_NAMES

# Debian's useradd default NAME_REGEX, plus upper case, [A-Za-z_][A-Za-z0-9_-]{0,31}:
# no '/', no spaces, no leading '-' or '.', so a name is always safe as one
# path component. Checked by hand: `re` (and the enum it imports) would be
# most of the warm login's imports.
_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_REST = _FIRST | frozenset("0123456789-")

DEFAULT_MAX_UID = 60000

# Names whose files would be berth's own (<log_dir>/proxy.log, <run_dir>/berth-proxy,
# ...: paths.OWN_NAMES, from the code that names them); berth-<uid> are
# hardened mode's mapping accounts.
RESERVED = frozenset(OWN_NAMES)
RESERVED_PREFIX = "berth-"


Account = namedtuple("Account", "name uid gid home")


def is_valid_name(name):
    return (isinstance(name, str) and 0 < len(name) <= 32 and name[0] in _FIRST
            and all(c in _REST for c in name[1:]))


def check_name(name):
    if not is_valid_name(name):
        raise UserRefused(f"{name!r} is not a valid user name",
                          hint="use a login name such as alice (letters, digits, _ and -, at most 32)")
    if name in RESERVED or name.startswith(RESERVED_PREFIX):
        raise UserRefused(f"{name!r} is reserved: berth's own files carry that name",
                          hint="give the person another login name")
    return name


def lookup(name):
    """The account `name` names exactly, or None.

    A second name for the same uid (an alias line in /etc/passwd) is not
    the account: berth keys everything on the name its uid maps back to.
    """
    if not is_valid_name(name) or name in RESERVED or name.startswith(RESERVED_PREFIX):
        return None
    try:
        entry = pwd.getpwnam(name)
        if pwd.getpwuid(entry.pw_uid).pw_name != name:
            return None
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def resolve(name, min_uid, max_uid=DEFAULT_MAX_UID):
    """The account berth serves under `name`.

    Raises:
        UserRefused: a bad name, an unknown user or an alias, root, or a uid
            outside [min_uid, max_uid].
    """
    check_name(name)
    account = lookup(name)
    if account is None:
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            raise UserRefused(f"user {name!r} does not exist",
                              hint=f"check the name, or create the account first (adduser {name})") from None
        raise UserRefused(f"{name!r} is a second name for uid {uid}, whose account is "
                          f"{pwd.getpwuid(uid).pw_name!r}",
                          hint="use the account's own name")
    if account.uid == 0:
        raise UserRefused(f"{name!r} is root; berth never gives root a daemon of its own",
                          hint="use the system Docker for root, and berth for people")
    if account.uid < min_uid:
        raise UserRefused(f"user {name!r} has uid {account.uid}, below [users].min_uid = {min_uid}",
                          hint="system accounts get no daemon; lower min_uid in the config if this is a person")
    if account.uid > max_uid:
        raise UserRefused(f"user {name!r} has uid {account.uid}, above [users].max_uid = {max_uid}",
                          hint="nobody and dynamic system users get no daemon; raise max_uid if this is a person")
    return account
