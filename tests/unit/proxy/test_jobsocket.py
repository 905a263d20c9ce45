"""A job's socket before a recording stand-in of dockerd: what the grant
changes reaches it, a refusal reaches nothing, and a grant's error is the
answer to everything."""

import asyncio
import json
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "corpus", "tools"))
import corpus  # noqa: E402
import standin  # noqa: E402

from berth.proxy import handler as proxy  # noqa: E402
from berth.proxy import jobmemory, jobpolicy, policy  # noqa: E402

JOB = jobpolicy.Hold(42, ("GPU-aaa", "GPU-bbb"), (), "/berth/alice/job-42")


@pytest.fixture(scope="module")
def standin_on_a_loop(tmp_path_factory):
    """(a stand-in dockerd, a loop in a thread of its own, a directory): one for the module."""
    d = tmp_path_factory.mktemp("jobsocket")
    upstream = standin.StandIn(str(d / "dockerd.sock"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield upstream, loop, d
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    upstream.stop()


@pytest.fixture
def socket_of(standin_on_a_loop):
    """serve(**handler options) -> (the proxy's socket, the stand-in behind it)."""
    upstream, loop, d = standin_on_a_loop
    upstream.clear()
    made = []

    def serve(**options):
        listener = socket.socket(socket.AF_UNIX)
        path = str(d / f"user{os.urandom(4).hex()}.sock")
        listener.bind(path)
        listener.listen(8)
        handler = proxy.Handler(upstream.server_address, policy.Context("10.213.0.128/25"), **options)
        made.append((handler, asyncio.run_coroutine_threadsafe(proxy.serve_socket(handler, listener), loop).result()))
        return path, upstream
    yield serve

    async def shut():
        for handler, server in made:
            server.close()
            for task in list(handler.tasks):
                task.cancel()
            await asyncio.gather(*handler.tasks, return_exceptions=True)
    asyncio.run_coroutine_threadsafe(shut(), loop).result(10)


def request(path, method, target, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"%s %s HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (method, target, len(data), data))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_create_on_a_jobs_socket_reaches_dockerd_held_to_the_grant(socket_of):
    path, upstream = socket_of(hold=JOB)
    status, _ = request(path, b"POST", b"/v1.41/containers/create", {
        "Image": "cuda", "Env": ["NVIDIA_VISIBLE_DEVICES=all"], "Labels": {"berth.job": "1"},
        "HostConfig": {"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]}})
    assert status == 201
    (sent,) = [json.loads(r.body) for r in upstream.forwarded() if r.target.endswith(b"/containers/create")]
    assert sent["Labels"] == {"berth.job": "42"} and sent["Env"] == ["NVIDIA_VISIBLE_DEVICES=GPU-aaa,GPU-bbb"]
    assert sent["HostConfig"]["DeviceRequests"] == [
        {"Driver": "", "Capabilities": [["gpu"]], "Count": 0, "DeviceIDs": ["GPU-aaa", "GPU-bbb"]}]
    assert sent["HostConfig"]["CgroupParent"] == "/berth/alice/job-42"


@pytest.mark.parametrize("target, body, words", [
    (b"/v1.41/containers/create", {"Image": "cuda", "HostConfig": {"DeviceRequests": [
        {"Driver": "nvidia", "DeviceIDs": ["GPU-ccc"], "Capabilities": [["gpu"]]}]}},
     "GPU 'GPU-ccc', not granted to job 42 (it has GPU-aaa, GPU-bbb)"),
    (b"/v1.41/containers/abc/update", {"Devices": [{"PathOnHost": "/dev/nvidia3"}]}, "the device /dev/nvidia3"),
])
def test_a_request_outside_the_grant_reaches_nothing(socket_of, target, body, words):
    path, upstream = socket_of(hold=JOB)
    status, answer = request(path, b"POST", target, body)
    assert status == 403 and words in json.loads(answer)["message"]
    assert json.loads(answer)["message"].startswith("berth: ")
    assert upstream.forwarded() == []


def test_the_login_socket_of_a_slurm_node_gives_every_container_no_gpu(socket_of):
    path, upstream = socket_of(hold=jobpolicy.LOGIN)
    assert request(path, b"POST", b"/containers/create", {"Image": "cuda"})[0] == 201
    (sent,) = [json.loads(r.body) for r in upstream.forwarded()]
    assert sent["Env"] == ["NVIDIA_VISIBLE_DEVICES=void"] and "Labels" not in sent


def test_a_socket_without_a_hold_passes_gpus_as_before(socket_of):
    path, upstream = socket_of()
    body = {"Image": "cuda", "HostConfig": {"DeviceRequests": [{"Driver": "", "Count": -1}]}}
    assert request(path, b"POST", b"/containers/create", body)[0] == 201
    (sent,) = [json.loads(r.body) for r in upstream.forwarded()]
    assert sent == body


@pytest.mark.parametrize("method, target", [(b"GET", b"/_ping"), (b"GET", b"/v1.41/containers/json"),
                                            (b"POST", b"/v1.41/containers/create")])
def test_a_failed_jobs_socket_answers_everything_with_its_error(socket_of, method, target):
    path, upstream = socket_of(answer_all=(503, "no free address block for alice in 10.213.0.0/16",
                                           "ask your administrator to enlarge [network].pool"))
    status, answer = request(path, method, target, {"Image": "x"} if method == b"POST" else None)
    assert status == 503 and json.loads(answer) == {
        "message": "berth: no free address block for alice in 10.213.0.0/16; "
                   "ask your administrator to enlarge [network].pool"}
    assert upstream.forwarded() == []


def test_a_build_on_a_jobs_socket_asks_dockerd_its_default_runtime(socket_of):
    """The stand-in says no DefaultRuntime: refused, as for a dockerd whose default is not runc."""
    path, upstream = socket_of(hold=JOB)
    status, answer = request(path, b"POST", b"/v1.41/build?t=x")
    assert status == 403 and "unknown runtime" in json.loads(answer)["message"]
    assert [r.target for r in upstream.received] == [b"/info"]


def test_the_connection_bound_is_the_users_over_all_their_sockets(socket_of):
    """A job's socket is not a second allowance: the user's login socket and
    their jobs' share one bound (the descriptors are every user's)."""
    shared = set()
    login, _ = socket_of(max_connections=1, user_tasks=shared)
    job, _ = socket_of(max_connections=1, user_tasks=shared, hold=JOB)
    with socket.socket(socket.AF_UNIX) as held:
        held.connect(login)
        held.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n")  # a head never finished: the connection stays
        for _ in range(100):
            if shared:
                break
            time.sleep(0.01)
        with socket.socket(socket.AF_UNIX) as more:
            more.settimeout(5)
            more.connect(job)
            try:
                more.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
                answer = more.recv(100)
            except (BrokenPipeError, ConnectionResetError):  # closed before, or with the request unread
                answer = b""
            assert answer == b""  # closed at once, nothing answered


def test_a_start_on_a_jobs_socket_goes_to_dockerd_by_the_id_it_checked(socket_of):
    path, upstream = socket_of(hold=JOB)
    assert request(path, b"POST", b"/v1.41/containers/web/start")[0] == 200
    assert [r.target for r in upstream.forwarded()] == [b"/v1.41/containers/%s/start" % corpus.fake_id("web").encode()]


def test_the_jobs_memory_is_taken_before_a_create_reaches_dockerd(socket_of, tmp_path):
    """Slurm's cgroup of the job came after the Prolog: berth's is held to its limit before the container runs."""
    (tmp_path / "slurm/job_42").mkdir(parents=True)
    (tmp_path / "slurm/job_42/memory.max").write_text("104857600\n")
    seen = []

    class Watched(jobmemory.JobMemory):
        def ensure(self):
            seen.append(len(upstream.forwarded()))  # what dockerd had been sent by then
            return super().ensure()

    memory = Watched(42, (str(tmp_path / "slurm/job_*/memory.max"),), str(tmp_path / "berth-job-42.memory.max"))
    path, upstream = socket_of(hold=JOB, job_memory=memory)
    assert request(path, b"POST", b"/v1.41/containers/create", {"Image": "busybox"})[0] == 201
    assert seen == [0] and (tmp_path / "berth-job-42.memory.max").read_text() == "104857600"
    assert len(upstream.forwarded()) == 1
