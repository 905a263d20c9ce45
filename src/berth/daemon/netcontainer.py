"""The user's net container, through the Docker SDK.

Ensured, never recreated: containers joined with --net=container:net lose
their network when it is replaced (moby#36334), so an existing one is only
started, and a running one is left alone.
"""

import logging
import time

from berth.core.errors import DaemonError
from berth.daemon import pause

log = logging.getLogger(__name__)

ROLE_LABEL = "io.berth.role"


# The API version of Docker 20.10 (Debian bookworm's docker.io); newer daemons
# still speak it, and naming it spares a round trip to negotiate.
API_VERSION = "1.41"


def client(docker_host, timeout=30):
    import docker

    return docker.DockerClient(base_url=docker_host, version=API_VERSION, timeout=timeout)


def _translated(fn):
    def wrapper(*args, **kwargs):
        import docker.errors
        import requests.exceptions

        try:
            return fn(*args, **kwargs)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            raise DaemonError(f"the Docker daemon refused: {e}",
                              hint="see the user's dockerd log (berth status USER shows its path)") from e
    return wrapper


def ensure_pause_image(dc):
    """Import berth's pause image if this daemon does not have it yet."""
    import docker.errors

    recipe = pause.find_recipe()
    try:
        dc.images.get(recipe.tag)
        return recipe.tag
    except docker.errors.ImageNotFound:
        pass
    repo, tag = recipe.tag.split(":")
    dc.api.import_image_from_data(pause.tarball(recipe), repository=repo, tag=tag,
                                  changes=list(recipe.changes))
    log.info("imported %s from %s", recipe.tag, recipe.binary)
    return recipe.tag


@_translated
def ensure(dc, name, image=""):
    """Make container `name` exist and run; returns the container.

    `image` "" means berth's own pause image, imported only when the
    container has to be created.
    """
    import docker.errors

    try:
        c = dc.containers.get(name)
    except docker.errors.NotFound:
        image = image or ensure_pause_image(dc)
        c = dc.containers.create(image, name=name, detach=True, labels={ROLE_LABEL: "net"},
                                 restart_policy={"Name": "always"}, hostname=name)
        log.info("created net container %s from %s", name, image)
    if c.status == "running":
        return c
    # restart policy "always" makes dockerd start it at boot on its own; a
    # container caught between states just gets a moment.
    deadline = time.monotonic() + 10
    while c.status in ("restarting", "removing") and time.monotonic() < deadline:
        time.sleep(0.05)
        c.reload()
    if c.status != "running":
        c.start()
        c.reload()
    if c.status != "running":
        raise DaemonError(f"net container {name} is {c.status} after start",
                          hint=f"inspect it: docker inspect {name}")
    return c


def ip_from_inspect(info):
    return (info.get("NetworkSettings") or {}).get("IPAddress") or ""
