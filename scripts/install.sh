#!/bin/sh
# Install berth on a Debian/Ubuntu host, as root (sudo works too): the system
# packages it drives (dockerd, containerd, runc, catatonit, iptables, cron,
# openssh-server), then berth itself in its own venv under /opt/berth, the
# `berth` command, a default config and the login hook (`berth install`:
# PAM lines for sshd, pam_env, profile.d, the reaper's schedule). Where no
# init system runs them, it starts cron (the reaper) and sshd (the logins).
#   ./scripts/install.sh                  everything
#   ./scripts/install.sh --no-login-hook  everything but the login hook
#   ./scripts/install.sh --deps-only      only the apt packages (used by test.sh)
# Running it again updates berth and changes nothing else.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${BERTH_PREFIX:-/opt/berth}

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo "$0" "$@"
    fi
    echo "install.sh: run it as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# docker.io brings dockerd, containerd and runc; catatonit (busybox-static as
# the fallback) is the static binary of the net container's pause image;
# openssh-server: logging in over ssh is how users get their daemon.
apt-get install -y -qq --no-install-recommends \
    docker.io catatonit busybox-static iptables cron logrotate openssh-server \
    python3 python3-venv >/dev/null
[ "${1:-}" = "--deps-only" ] && exit 0

# Debian's interpreter: it starts several times faster than a pyenv one,
# which matters on the login path.
/usr/bin/python3 -m venv "$prefix"
"$prefix/bin/pip" install -q --disable-pip-version-check "$here"
ln -sf "$prefix/bin/berth" /usr/local/bin/berth
install -d -m 0755 /etc/berth
[ -e /etc/berth/berth.toml ] || "$prefix/bin/berth" config --example > /etc/berth/berth.toml
if [ "${1:-}" != "--no-login-hook" ]; then
    /usr/local/bin/berth install
fi

# Without systemd (containers, minimal VMs) apt starts no services: the
# reaper needs cron running, and logins need sshd.
if [ ! -d /run/systemd/system ]; then
    pgrep -x cron >/dev/null || service cron start >/dev/null 2>&1 || echo "install.sh: start cron yourself (the reaper runs from it)" >&2
    pgrep -x sshd >/dev/null || service ssh start >/dev/null 2>&1 || echo "install.sh: start sshd yourself (logins bring daemons up)" >&2
fi
echo "berth installed: $("$prefix/bin/berth" config --check)"
