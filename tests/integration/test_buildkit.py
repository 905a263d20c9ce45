"""BuildKit through the user's socket, on the user's hardened dockerd: the
docker CLI's session (Debian's CLI 20.10 with DOCKER_BUILDKIT=1; the newer
CLI on PATH builds with BuildKit only through buildx, which is not
installed here) and buildx's gRPC control API, spoken with h2. Build
steps run as the user, in the user's cgroup and to the user's limits; no
entitlement is granted."""

import io
import os
import pwd
import subprocess
import tarfile

import grpc_h2c
import pytest

from berth.daemon import cgroups

DEBIAN_CLI = "/usr/bin/docker"
BUILDKIT = {**os.environ, "DOCKER_BUILDKIT": "1"}
MEMORY = 96 << 20

pytestmark = pytest.mark.skipif(not os.path.exists(DEBIAN_CLI), reason="needs Debian's docker CLI (docker.io)")


@pytest.fixture(scope="module")
def limited(harness):
    """A hardened user whose containers share 96 MiB."""
    user = harness.add_user()
    cfg = harness.write_config("buildkit.toml", extra=f'[limits.users.{user}]\nmemory = "{MEMORY}"\n')
    harness.berth("up", user, config=cfg)
    img = harness.import_busybox(user)
    yield user, img, harness.sock(user)
    harness.berth("down", user, config=cfg)


def engine_socket(harness, user):
    """dockerd's own socket, root's alone: what dockerd answers without the proxy."""
    return f"{harness.root}/run/{user}/d/docker.sock"


def build(sock, *args, stdin=None):
    return subprocess.run([DEBIAN_CLI, "-H", f"unix://{sock}", "build", "--progress=plain", *args],
                          capture_output=True, timeout=300, env=BUILDKIT, input=stdin)


def docker(sock, *args):
    r = subprocess.run([DEBIAN_CLI, "-H", f"unix://{sock}", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_buildkit_build_tags_an_image_whose_steps_ran_as_the_user_in_their_cgroup(limited, harness, tmp_path):
    user, img, sock = limited
    (tmp_path / "Dockerfile").write_text(
        f"FROM {img}\nCOPY blob /blob\n"
        "RUN cat /proc/self/uid_map > /uid_map && cat /proc/self/cgroup > /cgroup && wc -c < /blob > /size\n")
    (tmp_path / "blob").write_bytes(os.urandom(1 << 20))
    r = build(sock, "-t", "bk-built", str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    assert docker(sock, "run", "--rm", "bk-built", "cat", "/size").strip() == str(1 << 20)
    uid = pwd.getpwnam(user).pw_uid
    # container root was the user, as in `docker run`
    assert docker(sock, "run", "--rm", "bk-built", "cat", "/uid_map").split()[:3] == ["0", str(uid), "1"]
    # and the step ran below the user's cgroup (runc's buildkit/<id>), in every hierarchy
    paths = [line.split(":", 2)[2] for line in docker(sock, "run", "--rm", "bk-built", "cat", "/cgroup").split()]
    parent = cgroups.parent_of(user)
    assert paths and all(p.startswith(parent + "/buildkit/") for p in paths), paths


def test_a_build_step_past_its_users_memory_is_killed(limited, tmp_path):
    _, img, sock = limited
    (tmp_path / "Dockerfile").write_text(f"FROM {img}\nRUN busybox dd if=/dev/zero of=/dev/null bs=200M count=1\n")
    r = build(sock, "--no-cache", str(tmp_path))
    assert r.returncode != 0 and b"exit code: 137" in r.stderr, r.stderr.decode()


def test_a_build_from_standard_input_sends_its_context_in_a_request_of_its_own(limited):
    _, img, sock = limited
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        dockerfile = f"FROM {img}\nRUN echo from-stdin > /said\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    r = build(sock, "-t", "bk-stdin", "-", stdin=context.getvalue())  # remote=upload-request
    assert r.returncode == 0, r.stderr.decode()
    assert docker(sock, "run", "--rm", "bk-stdin", "cat", "/said").strip() == "from-stdin"


def test_a_build_exports_its_files_to_the_client_through_its_session(limited, tmp_path):
    """--output type=local: dockerd sends the result back through the session (the other way round)."""
    _, img, sock = limited
    context, out = tmp_path / "context", tmp_path / "out"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {img}\nRUN busybox seq 1 200000 > /numbers\n")
    r = build(sock, "--output", f"type=local,dest={out}", str(context))
    assert r.returncode == 0, r.stderr.decode()
    assert (out / "numbers").read_text().split()[-1] == "200000"
    assert (out / "bin" / "busybox").stat().st_size == os.stat("/bin/busybox").st_size


def test_a_host_network_build_is_refused_by_berth_and_by_dockerd_itself(limited, harness, tmp_path):
    user, img, sock = limited
    (tmp_path / "Dockerfile").write_text(f"FROM {img}\nRUN true\n")
    r = build(sock, "--network", "host", "--no-cache", str(tmp_path))
    assert r.returncode != 0 and b"berth: a build with --network=host" in r.stderr, r.stderr.decode()
    # what gRPC could ask for, where the proxy cannot see: dockerd's own entitlements say no
    r = build(engine_socket(harness, user), "--network", "host", "--no-cache", str(tmp_path))
    assert r.returncode != 0 and b"entitlement network.host is not allowed" in r.stderr, r.stderr.decode()


def test_buildx_grpc_reaches_dockerds_buildkit_through_the_proxy(limited, harness):
    user, _, sock = limited
    status, reply, _ = grpc_h2c.call(sock, "/moby.buildkit.v1.Control/ListWorkers")
    assert status == "0", (status, reply)
    assert b"amd64" in reply or b"arm64" in reply  # a worker and its platforms
    # dockerd's own answer, as on its own socket
    assert grpc_h2c.call(engine_socket(harness, user), "/moby.buildkit.v1.Control/ListWorkers")[:2] == (status, reply)
