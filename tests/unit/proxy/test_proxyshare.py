"""Each user's share of the policy proxy: the budget arithmetic (pure), and
its use on a loop: one body at a time per user, paced to a CPU share,
parses that wait for room rather than pile up."""

import asyncio
import threading

import pytest

from berth.proxy import apijson
from berth.proxy import share as proxyshare
from berth.proxy.share import Account


def test_raw_bytes_are_held_up_to_the_cap_and_not_past_it():
    a = Account(now=0, raw_cap=100)
    assert a.hold(60) and a.hold(40)
    assert not a.hold(1)
    assert a.raw == 100  # a refused hold counts nothing


def test_a_parse_fits_under_the_cap_or_alone():
    a = Account(now=0, parsed_cap=100)
    assert a.fits(1000)  # alone: it never waits for nothing
    a.parsed = 60
    assert a.fits(40) and not a.fits(41)


def test_a_body_of_the_largest_size_parsed_fits_the_cap_alone():
    assert proxyshare.parsed_cost(apijson.MAX_BODY) <= proxyshare.PARSED_CAP


def test_cpu_tokens_pace_a_user_to_their_share_after_a_burst():
    a = Account(now=0, share=0.25, burst=0.25)
    assert a.wait(0) == 0
    a.spent(0.25, now=0)  # the burst, spent at once
    assert a.wait(0) == 0  # nothing owed: exactly empty is not in debt ...
    a.spent(0.05, now=0)
    assert a.wait(0) == pytest.approx(0.2)  # ... 50 ms of CPU over it is 200 ms at a quarter of a core
    assert a.wait(0.2) == pytest.approx(0, abs=1e-9)  # refilled


def test_tokens_refill_no_further_than_the_burst():
    a = Account(now=0, share=0.25, burst=0.25)
    a.spent(0.1, now=0)
    a.wait(1000)
    assert a.tokens == pytest.approx(0.25)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_request_over_the_raw_cap_is_refused_and_its_bytes_let_go_of_when_answered():
    share = proxyshare.Share(proxyshare.Pool(), raw_cap=100)
    first, second = share.charges(), share.charges()
    assert first.hold(80)
    assert not second.hold(30) and share.over_cap == 1
    first.release()
    assert second.hold(30) and share.account.raw == 30
    second.release()
    assert share.account.raw == 0


def test_one_users_bodies_are_worked_on_one_at_a_time_in_a_thread_when_big():
    async def main():
        share = proxyshare.Share(proxyshare.Pool(), burst=10)
        running, most, threads = 0, 0, set()

        def parse(raw):
            nonlocal running, most
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
            sum(range(200_000))
            running -= 1
            return len(raw), None

        big = b"x" * (proxyshare.INLINE + 1)
        charges = [share.charges() for _ in range(6)]
        results = await asyncio.gather(*(c.parse(parse, big) for c in charges))
        small = await share.charges().parse(parse, b"{}")
        share.pool.close()
        return results, small, most, threads

    results, small, most, threads = asyncio.run(main())
    assert results == [(proxyshare.INLINE + 1, None)] * 6 and small == (2, None)
    assert most == 1  # however many at once, one user's take one worker
    assert "MainThread" in threads and any(t.startswith("berth-body") for t in threads)


def test_a_parse_waits_until_a_parsed_body_of_the_same_user_is_answered():
    async def main():
        cost = proxyshare.parsed_cost(1000)
        share = proxyshare.Share(proxyshare.Pool(), parsed_cap=cost + 1)
        first, second = share.charges(), share.charges()
        await first.parse(lambda raw: raw, b"x" * 1000)
        waiting = asyncio.ensure_future(second.parse(lambda raw: raw, b"y" * 1000))
        await asyncio.sleep(0.05)
        assert not waiting.done() and share.account.parsed == cost
        first.release()  # answered: its parsed body goes
        assert await waiting == b"y" * 1000
        second.release()
        assert share.account.parsed == 0 and share.account.raw == 0

    asyncio.run(main())


def test_a_user_over_their_cpu_share_waits_before_the_next_body():
    async def main():
        clock, slept = Clock(), []

        async def sleep(seconds):
            slept.append(seconds)
            clock.now += seconds

        share = proxyshare.Share(proxyshare.Pool(), clock=clock, sleep=sleep, share=0.5, burst=0.01)

        def costly(raw):
            share.account.spent(0.1, clock.now)  # as if the parse took 100 ms of CPU
            return raw

        await share.charges().parse(costly, b"{}")
        await share.charges().parse(costly, b"{}")
        return slept, share.paced

    slept, paced = asyncio.run(main())
    assert paced == 1 and slept[0] == pytest.approx((0.1 - 0.01) / 0.5, abs=0.01)
