"""The Epilog's removal of a job's containers (hooks.remove_containers),
before a fake dockerd: what it calls left over decides whether the node
drains, so a user must not be able to make it non-empty."""

from berth.daemon import engine
from berth.slurm import hooks


class FakeDockerd:
    """Lists what `listings` say, one listing per call (the last repeats);
    removes whatever it is asked to."""

    def __init__(self, *listings):
        self.listings = list(listings)
        self.removed = []

    def get_json(self, sock, path, timeout=None):
        ids = self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]
        return [{"Id": i * 64} for i in ids]

    def request(self, sock, path, timeout=None, method="GET"):
        self.removed.append(path.split("/")[2].split("?")[0][:1])
        return 204, b""


def test_a_container_labelled_with_the_job_after_the_epilog_began_does_not_drain_the_node(monkeypatch):
    """The user's login socket makes containers with any label (`--label
    berth.job=<id>`, or an image's LABEL): one made in a loop while the
    Epilog runs lands after its last removal, and the Epilog took it for a
    container of the job it could not remove, and drained the node. Only
    the job's socket gives a container the job's GPUs, and it is closed
    before the Epilog looks: what appeared since holds none of them."""
    dockerd = FakeDockerd(["a"], ["b"], ["c"])  # each look finds one more the user just made
    monkeypatch.setattr(engine, "get_json", dockerd.get_json)
    monkeypatch.setattr(engine, "request", dockerd.request)
    assert hooks.remove_containers("/x.sock", 7) == []
    assert dockerd.removed == ["a", "b"]


def test_a_container_of_the_job_that_stays_is_left_over(monkeypatch):
    dockerd = FakeDockerd(["a"])  # removed every time, there every time
    monkeypatch.setattr(engine, "get_json", dockerd.get_json)
    monkeypatch.setattr(engine, "request", dockerd.request)
    assert hooks.remove_containers("/x.sock", 7) == ["a" * 12]
