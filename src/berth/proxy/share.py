"""Each user's share of the policy proxy's work on request bodies: what
one user sends costs the others little, however much of it there is.

The proxy reads, parses and checks the JSON bodies the policy reads
(container, exec, network, volume create) itself, and one 1 MiB body of
many keys takes about 50 ms of CPU to parse and 15 ms to encode again,
and some 11-22 MB of Python objects while it is parsed. On the one event
loop every user shares, eight streams of them from one user held the loop
at 100 % and another user's `docker ps` waited 0.7 s (issue 19). So, per
user (`Share`: every connection of theirs, on any of their sockets):

- Memory. The raw body bytes their requests hold at once are capped
  (RAW_CAP): a request that would go past it is answered 429 at once.
  Parsed bodies are counted at PARSED_FACTOR times their size, from their
  parse until their request is answered, and capped (PARSED_CAP): a parse
  that does not fit waits for one of theirs to be answered. A parse
  always fits alone (a body is at most apijson.MAX_BODY), so the wait ends.
- CPU. Their bodies are parsed and encoded one at a time, in the order
  they came (`_turn`), and a body over INLINE goes to a worker thread, so
  the loop, which serves everybody else, is held only in what the
  interpreter does not hand over (the C parts of json: about 10 ms of a
  1 MiB body); the thread's CPU time is charged to a token bucket that
  refills at CPU_SHARE of a core, and a user whose bucket is empty waits
  before the next body. A user alone is never paced below their share,
  and however many bodies one user sends, they take at most one worker
  and CPU_SHARE of a core. (proxyd hands the interpreter between threads
  every millisecond rather than every 5, so the loop's turns come soon.)

`Account` is the arithmetic, pure (the clock is passed in); `Share` and
`Charges` are its use on the loop; `Pool` is the host's worker threads.
"""

import asyncio
import concurrent.futures
import time

RAW_CAP = 16 << 20  # unparsed body bytes one user's requests hold at once: past it, 429
PARSED_CAP = 32 << 20  # parsed bodies (estimated) one user's requests hold at once: past it, a parse waits
# A parsed body's Python objects against its JSON, measured: 1 MB of labels
# held 11 MB parsed and 22 MB at its peak, 0.67 MB of small objects 12 MB.
PARSED_FACTOR = 24
PARSED_BASE = 4096  # what even a tiny body costs parsed (its dicts, its charge)
CPU_SHARE = 0.25  # of a core, spent on one user's bodies, over time
CPU_BURST = 0.25  # seconds of CPU one user may spend at once before being paced
INLINE = 16 << 10  # bodies up to this are parsed on the loop (well under 1 ms): no thread for the everyday ones
# Worker threads for the host: with the GIL they add no CPU, only turns;
# two keep the loop competing with at most two of them for the interpreter.
WORKERS = 2


def parsed_cost(size):
    """The memory a body of `size` bytes is counted at while parsed."""
    return PARSED_BASE + PARSED_FACTOR * size


class Account:
    """One user's budget: body bytes held, raw and parsed, and CPU tokens
    (seconds) that refill at `share` of a core up to `burst`. Pure."""

    def __init__(self, now, raw_cap=RAW_CAP, parsed_cap=PARSED_CAP, share=CPU_SHARE, burst=CPU_BURST):
        self.raw_cap, self.parsed_cap, self.share, self.burst = raw_cap, parsed_cap, share, burst
        self.raw = self.parsed = 0
        self.tokens, self._stamp = burst, now

    def hold(self, size):
        """Count `size` more raw bytes; False (nothing counted) past the cap."""
        if self.raw + size > self.raw_cap:
            return False
        self.raw += size
        return True

    def fits(self, cost):
        """Whether a parse counted at `cost` may begin: under the cap, or
        the user's only one (so a parse never waits for nothing)."""
        return self.parsed == 0 or self.parsed + cost <= self.parsed_cap

    def _refill(self, now):
        self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.share)
        self._stamp = now

    def wait(self, now):
        """Seconds before the user's next body may be worked on (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 0 else -self.tokens / self.share

    def spent(self, cpu, now):
        """`cpu` seconds were spent on one of the user's bodies."""
        self._refill(now)
        self.tokens -= cpu


def _timed(fn, args):
    """fn(*args) and the CPU time of the thread that ran it."""
    t0 = time.thread_time()
    result = fn(*args)
    return result, time.thread_time() - t0


class Pool:
    """The worker threads every user's big bodies are parsed in (made at first use)."""

    def __init__(self, workers=WORKERS):
        self.workers = workers
        self._executor = None

    async def run(self, fn, args):
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="berth-body")
        return await asyncio.get_running_loop().run_in_executor(self._executor, _timed, fn, args)

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class Share:
    """One user's share of the proxy: their Account, the turn their bodies
    take one at a time, and the pool they are parsed in."""

    def __init__(self, pool, clock=time.monotonic, sleep=asyncio.sleep, **limits):
        self.pool = pool
        self.clock, self.sleep = clock, sleep
        self.account = Account(clock(), **limits)
        self._turn = asyncio.Lock()
        self._answered = asyncio.Event()  # a parsed body was let go of
        self.over_cap = 0  # requests answered 429
        self.paced = 0  # bodies that waited for CPU

    def charges(self):
        """What one request holds of this share (let go by `release`)."""
        return Charges(self)

    async def _room(self, cost):
        while not self.account.fits(cost):
            self._answered.clear()
            await self._answered.wait()
        self.account.parsed += cost

    async def work(self, fn, args, size):
        """fn(*args) in the user's turn, paced to their CPU share; in the
        pool if the body it works on is over INLINE bytes."""
        async with self._turn:
            wait = self.account.wait(self.clock())
            if wait:
                self.paced += 1
                await self.sleep(wait)
            if size > INLINE:
                result, cpu = await self.pool.run(fn, args)
            else:
                result, cpu = _timed(fn, args)
            self.account.spent(cpu, self.clock())
            return result


class Charges:
    """One request's part of its user's share: the raw bytes of its body
    while it is read, then its parsed body until the request is answered."""

    def __init__(self, share):
        self.share = share
        self.raw = self.parsed = self.size = 0

    def hold(self, size):
        """Count `size` more bytes of the body read; False past the user's cap."""
        if not self.share.account.hold(size):
            self.share.over_cap += 1
            return False
        self.raw += size
        return True

    def _let_go_raw(self):
        self.share.account.raw -= self.raw
        self.raw = 0

    async def parse(self, fn, raw, *args):
        """fn(raw, *args), the body's parse (and check), in its user's
        turn; the raw bytes are let go of, the parsed body counted."""
        cost, self.size = parsed_cost(len(raw)), len(raw)
        await self.share._room(cost)
        self.parsed = cost
        try:
            return await self.share.work(fn, (raw, *args), len(raw))
        finally:
            self._let_go_raw()

    async def encode(self, fn, value):
        """fn(value), the parsed body encoded again, in its user's turn."""
        return await self.share.work(fn, (value,), self.size)

    def release(self):
        """The request is answered (or refused): everything it held goes."""
        self._let_go_raw()
        if self.parsed:
            self.share.account.parsed -= self.parsed
            self.parsed = 0
            self.share._answered.set()
