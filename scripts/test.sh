#!/bin/sh
# Run berth's whole test suite on a Debian/Ubuntu host, as root (sudo works
# too): installs the system packages and a venv (.venv) with berth and its
# test dependencies, then pytest. Unit tests need nothing; integration tests
# start real dockerd processes, bridges, iptables rules, users and an sshd
# (with a private PAM directory), all named and cleaned per run. The host's
# files (/etc/pam.d, /etc/berth, /usr/local/bin, ...) are never touched, so
# it runs the same before or after scripts/install.sh.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
    exec sudo "$0" "$@"
fi
"$here/scripts/install.sh" --deps-only
# docker-compose: the conformance corpus sets up and tears down its compose
# scenarios with it (the corpus itself is recorded bytes: no client replays it)
apt-get install -y -qq --no-install-recommends openssh-client procps iproute2 util-linux gcc libc6-dev acl \
    docker-compose >/dev/null
# munge and Slurm (slurmctld, slurmd, the client commands, pam_slurm_adopt): test_slurm*.py
# starts a private one-node cluster of its own (key, socket, config, ports,
# spool in a temporary dir; /etc/munge and /etc/slurm unread). Where PID 1 is
# not systemd, installing them would start the host's munged (invoke-rc.d):
# a policy-rc.d denies it for this install, unless the host has its own.
policy=/usr/sbin/policy-rc.d made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client \
    libpam-slurm-adopt >/dev/null
if [ -n "$made_policy" ]; then rm -f "$policy"; trap - EXIT; fi
venv=${BERTH_TEST_VENV:-$here/.venv}
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
cd "$here"
exec "$venv/bin/python" -m pytest -q -ra "$@"
