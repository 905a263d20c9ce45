# berth: point docker at your own daemon (added by 'berth install').
# For shells started without PAM; silent, and leaves a DOCKER_HOST you set alone.
if [ -z "${DOCKER_HOST:-}" ]; then
    _berth_sock="/run/berth/${USER:-$(id -un 2>/dev/null)}/docker.sock"
    if [ -S "$_berth_sock" ]; then
        DOCKER_HOST="unix://$_berth_sock"
        export DOCKER_HOST
    fi
    unset _berth_sock
fi
