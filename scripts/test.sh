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
venv=${BERTH_TEST_VENV:-$here/.venv}
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
cd "$here"
exec "$venv/bin/python" -m pytest -q -ra "$@"
