"""berth's directories for one user, each as open as it must be and no more."""

import logging
import os
import stat

from berth.core import paths
from berth.core.errors import DaemonError
from berth.core.fsutil import ensure_dir, ensure_private_file, traverse_only_for
from berth.core.paths import ROOT_ONLY, TRAVERSE_ONLY

log = logging.getLogger(__name__)


def prepare(cfg, upaths, account):
    ensure_dir(cfg.paths.state_dir, TRAVERSE_ONLY)
    ensure_private_file(os.path.join(cfg.paths.state_dir, "leases.json"))  # 0644 under older berths
    ensure_dir(os.path.dirname(os.path.dirname(upaths.data_root)), TRAVERSE_ONLY)
    # dockerd refuses a remapped root whose parents lack o+x (it checks the
    # mode bits, not access): 0711, and dockerd makes the data-root 0710.
    os.chmod(ensure_dir(os.path.dirname(upaths.data_root), TRAVERSE_ONLY), TRAVERSE_ONLY)
    if cfg.security.mode == "hardened":
        check_passable(os.path.dirname(upaths.data_root))
    ensure_dir(cfg.paths.run_dir, TRAVERSE_ONLY)
    # The user (only) passes through to the socket inside; nothing in it is theirs to write.
    ensure_dir(upaths.run_dir, TRAVERSE_ONLY)
    ensure_dir(upaths.engine_dir, ROOT_ONLY)  # dockerd's own socket: root's alone
    if not traverse_only_for(upaths.run_dir, account.uid):
        log.warning("%s has no POSIX ACLs: %s is 0711, so others can stat (not list) what is in it",
                    cfg.paths.run_dir, upaths.run_dir)
    ensure_dir(cfg.paths.log_dir, ROOT_ONLY)
    if len(upaths.exec_root) + len("/containerd/containerd-debug.sock") > paths.MAX_SOCKET_PATH:
        raise DaemonError(f"the exec-root {upaths.exec_root} is too long for containerd's sockets",
                          hint="choose a shorter [paths].run_dir")


def check_passable(path):
    """Every directory from `path` up must be o+x, or dockerd refuses the remapped root."""
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            raise DaemonError(f"{path} is not passable by others (o+x), and in hardened mode dockerd needs "
                              f"every directory above a user's data-root to be",
                              hint=f"chmod o+x {path}, or choose another [paths].state_dir")
        if path == "/":
            return
        path = os.path.dirname(path)
