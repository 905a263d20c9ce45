# berth: point docker at your own daemon (added by 'berth install').
# For shells started without PAM; silent, and leaves a DOCKER_HOST you set alone.
_berth_dir="/run/berth/${USER:-$(id -un 2>/dev/null)}"
if [ -z "${DOCKER_HOST:-}" ] && [ -S "$_berth_dir/docker.sock" ]; then
    DOCKER_HOST="unix://$_berth_dir/docker.sock"
    export DOCKER_HOST
fi
# A login pam_slurm_adopt put into a Slurm job (it sets SLURM_JOB_ID): that job's
# socket, with its GPUs, in place of the login's.
if [ -n "${SLURM_JOB_ID:-}" ] && [ -S "$_berth_dir/job-$SLURM_JOB_ID.sock" ] \
        && [ "${DOCKER_HOST:-}" = "unix://$_berth_dir/docker.sock" ]; then
    DOCKER_HOST="unix://$_berth_dir/job-$SLURM_JOB_ID.sock"
    export DOCKER_HOST
fi
unset _berth_dir
