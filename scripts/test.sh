#!/bin/sh
# Run berth's whole test suite on a Debian/Ubuntu host, as root: installs the
# system packages and a venv (.venv) with berth and its test dependencies,
# then pytest. Unit tests need nothing; integration tests start real dockerd
# processes, bridges and iptables rules, all named and cleaned per run.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install.sh" --deps-only
apt-get install -y -qq --no-install-recommends openssh-server openssh-client procps iproute2 util-linux >/dev/null
venv=${BERTH_TEST_VENV:-$here/.venv}
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
"$venv/bin/pip" uninstall -q -y setuptools 2>/dev/null || true  # as install.sh does
cd "$here"
exec "$venv/bin/python" -m pytest -q -ra "$@"
