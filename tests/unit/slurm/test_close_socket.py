"""The Epilog's closing of a job's socket (hooks.close_socket): a proxy
that does not answer in time is no proxy that is gone."""

import pytest

from berth.proxy import control as proxyctl
from berth.slurm import hooks


class Proxy:
    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.timeouts = []

    def drop(self, run_dir, user, job_id, timeout):
        self.timeouts.append(timeout)
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


def test_a_slow_proxy_is_asked_again_with_patience():
    proxy = Proxy(TimeoutError(), None)
    hooks.close_socket("/run/berth", "alice", 7, drop=proxy.drop)
    assert proxy.timeouts == [5.0, 30.0]


def test_a_proxy_that_never_answers_drains_the_node():
    """It may still serve the job's socket, and a connection held open on
    it makes containers with GPUs that are the next job's."""
    proxy = Proxy(TimeoutError(), TimeoutError())
    with pytest.raises(hooks.NodeBroken, match="does not answer"):
        hooks.close_socket("/run/berth", "alice", 7, drop=proxy.drop)


@pytest.mark.parametrize("outcome", [FileNotFoundError(), ConnectionRefusedError(), proxyctl.ProxyError("no")])
def test_no_proxy_or_a_refusal_is_no_fault_of_the_node(outcome):
    proxy = Proxy(outcome)
    hooks.close_socket("/run/berth", "alice", 7, drop=proxy.drop)
    assert proxy.timeouts == [5.0]
