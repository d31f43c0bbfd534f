# Ref: docs/isa.md, "Queues, tokens and the cycle count" (rules 1-6), the binding timing
#      contract of the model and the RTL; DESIGN.md section 9 (what cycle-exact means);
#      T. Moreau et al., VTA, IEEE Micro 2019 (queues with dependency tokens).
"""The cycle schedule of a program: when each instruction is fetched, starts and completes.

:func:`schedule` applies rules 1-6 of docs/isa.md to a decoded program segment. It is an
event-driven computation over instructions, not a per-cycle loop: it visits only the cycles
at which something can change (a fetch, a completion, an instruction reaching ``f + 1``),
at most about three per instruction, with constant work (five queues) at each.

The machine, cycle by cycle
---------------------------
Within one cycle ``t`` the model resolves, in this order:

1. **Completions.** Every instruction with ``c = t`` frees its unit and pushes one token to
   each queue of its ``push`` mask. Those tokens can be taken in cycle ``t`` (rule 3).
2. **Starts.** For each queue, LOAD, COMPUTE, PRUNE, UPDATE, STORE in that order, the
   oldest not-started instruction of the queue starts at ``t`` if ``f + 1 <= t``, its
   unit is free (the queue's previous instruction has ``c <= t``), a token is waiting
   from every queue of its ``pop`` mask (it takes them) and, for LOAD and STORE, the other
   DMA queue has no instruction running (``s <= t < c``). Starts consume tokens and never
   produce any, so they do not influence one another except through the memory port: the
   LOAD is tried first, so when both DMA queues could start in the same cycle the LOAD
   goes first (rule 2).
3. **Token overflow.** Each ordered pair of queues (producer, consumer) has a counter; at
   most one push and one pop of a pair happen per cycle (one completion and one start per
   unit). A push overflows when the counter *after* cycle ``t``, pushes and pops of ``t``
   included, exceeds ``token_depth``: a counter at ``token_depth`` that is pushed and popped
   in the same cycle does not overflow (rule 4). The error rises in cycle ``t``.
4. **Fetch.** Unless fetching has stopped, the instruction at the fetch pc is fetched at
   ``t`` if ``t >= f_prev + 1`` and its queue's FIFO holds fewer than
   ``queue_depths[queue]`` fetched, not-started instructions *after the starts of cycle
   t*: a FIFO slot frees in the cycle its instruction starts and can be refilled in that
   same cycle (rule 1). HALT occupies no FIFO: it is fetched at ``f_prev + 1`` and stops
   fetching. An illegal instruction (and a fetch past the end of the program) is fetched at
   ``f_prev + 1`` as well, occupies no FIFO, stops fetching and raises ``error`` at
   ``f + 1`` (rule 6).

Termination
-----------
The machine is *quiescent* from the first cycle in which no unit is busy, no instruction can
start and fetching has stopped or stalls; nothing changes after that. That cycle is
``T = max(f_last + 1, max_i c_i)``, ``f_last`` the last successful fetch (HALT included).
If HALT was fetched and every fetched instruction has completed, ``done`` rises at ``T``,
which is rule 5's ``max(f_h + 1, max_i c_i)``. Otherwise the run is a **token deadlock**:
``error`` rises at the same ``T``, naming the oldest fetched instruction that has not
started (rule 6); it is necessarily a queue head waiting for tokens.

An error stops the run in the cycle it rises. When several errors rise in one cycle, the
one of the lowest pc is reported. Cycles count from 0, the first fetch (rule 5); the run's
cycle count is the cycle ``done`` or ``error`` rises.

Interpretations where docs/isa.md leaves room: the FIFO and token same-cycle rules above;
an illegal instruction occupies no FIFO, so it never stalls fetch; an overflow error rises
in the cycle of the push, so an overflow by the last completion is not hidden by ``done``
rising in that cycle; HALT's ``pop`` and ``push`` masks are ignored (HALT belongs to the
fetch unit, not a queue); a deadlock's error rises when the machine becomes quiescent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

from nmsat.hw.isa import Queue
from nmsat.hw.params import QUEUE_NAMES, SATParams

__all__ = ["HALT", "STOP", "Schedule", "schedule"]

#: Queue code of HALT in :func:`schedule`'s ``queues`` argument (the fetch unit's own).
HALT = -1
#: Queue code of an instruction that stops fetch with an error: illegal, or past the end.
STOP = -2

_QUEUES = len(Queue)
assert tuple(q.name.lower() for q in Queue) == QUEUE_NAMES
_LOAD, _STORE = Queue.LOAD.value, Queue.STORE.value
_NEVER = 1 << 62


def _pairs(queue: int, mask: int, popping: bool) -> tuple[int, ...]:
    """Return the token counters (producer * 5 + consumer) a mask names, for one queue."""
    others = [q for q in range(_QUEUES) if mask >> q & 1]
    if popping:
        return tuple(p * _QUEUES + queue for p in others)
    return tuple(queue * _QUEUES + c for c in others)


# _POPS[q][mask]: counters an instruction of queue q pops; _PUSHES likewise for pushes.
_POPS = [[_pairs(q, mask, True) for mask in range(1 << _QUEUES)] for q in range(_QUEUES)]
_PUSHES = [[_pairs(q, mask, False) for mask in range(1 << _QUEUES)] for q in range(_QUEUES)]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The timing of one run, per instruction of the segment (index 0 = the start pc).

    Members
    -------
    fetch, start, complete : list of int
        Cycle of each event, -1 where it did not happen (HALT never starts; after an error
        some instructions are not fetched or not started).
    order : list of int
        Indices of the started instructions in start order (by cycle, then queue order
        LOAD, COMPUTE, PRUNE, UPDATE, STORE): the order in which the model applies their
        data effects.
    status : {"done", "error"}
    cycles : int
        The cycle ``done`` or ``error`` rises.
    error_index : int or None
        Index of the instruction the error names.
    error_kind : {"illegal", "overflow", "deadlock"} or None
        ``illegal``: the STOP instruction at ``error_index`` was fetched; ``overflow``: its
        push overflowed the counter ``error_pair``; ``deadlock``: it waits for tokens from
        the queues in ``waiting_for``.
    error_pair : tuple of (int, int) or None
        (producer queue, consumer queue) of an overflow.
    waiting_for : tuple of int
        Queues whose token a deadlocked instruction lacks.
    """

    fetch: list[int]
    start: list[int]
    complete: list[int]
    order: list[int]
    status: Literal["done", "error"]
    cycles: int
    error_index: int | None = None
    error_kind: Literal["illegal", "overflow", "deadlock"] | None = None
    error_pair: tuple[int, int] | None = None
    waiting_for: tuple[int, ...] = ()


def schedule(
    queues: Sequence[int],
    cycles: Sequence[int],
    pops: Sequence[int],
    pushes: Sequence[int],
    params: SATParams,
    progress: Callable[[int, int], None] | None = None,
) -> Schedule:
    """Compute the cycle schedule of a program segment (rules 1-6 of docs/isa.md).

    Parameters
    ----------
    queues : sequence of int
        Queue of each instruction in fetch order (``Queue.value``), :data:`HALT` for HALT,
        :data:`STOP` for an instruction that raises an error when fetched. Fetch never
        passes a HALT or a STOP, so only the last entry may be one; a segment must end with
        one.
    cycles : sequence of int
        ``isa.cycles`` of each instruction (at least 1; ignored for HALT and STOP).
    pops, pushes : sequence of int
        Token masks of each instruction (bit q = ``Queue(q)``).
    params : SATParams
        ``queue_depths`` and ``token_depth``.
    progress : callable, optional
        Called as ``progress(fetched, total)`` every 4096 fetches and at the end.

    Returns
    -------
    Schedule
    """
    n = len(queues)
    if n == 0 or queues[-1] >= 0:
        raise ValueError("a segment must end with a HALT or a STOP entry")
    depth = params.queue_depths
    token_depth = params.token_depth
    fetch = [-1] * n
    start = [-1] * n
    complete = [-1] * n
    order: list[int] = []
    fifo: list[list[int]] = [[] for _ in range(_QUEUES)]
    head = [0] * _QUEUES
    busy = [0] * _QUEUES  # completion cycle of the queue's last started instruction
    running = [-1] * _QUEUES  # instruction whose completion is still to come, or -1
    tokens = [0] * (_QUEUES * _QUEUES)
    all_queues = range(_QUEUES)

    t = 0
    next_fetch = 0  # index of the next instruction to fetch
    fetch_at = 0  # earliest cycle of the next fetch (f_prev + 1)
    fetching = True
    halted = False
    last_fetch = -1
    max_complete = 0
    error_time, error_index = _NEVER, n
    error_kind: Literal["illegal", "overflow", "deadlock"] | None = None
    error_pair: tuple[int, int] | None = None

    while True:
        # 1. Completions: free the unit, push tokens (usable in this cycle).
        pushed: list[tuple[int, tuple[int, ...]]] = []
        for q in all_queues:
            i = running[q]
            if i >= 0 and busy[q] == t:
                running[q] = -1
                counters = _PUSHES[q][pushes[i]]
                if counters:
                    for k in counters:
                        tokens[k] += 1
                    pushed.append((i, counters))
        # 2. Starts, LOAD first (it wins the memory port on a tie with STORE).
        for q in all_queues:
            h = head[q]
            queue_fifo = fifo[q]
            if h == len(queue_fifo) or busy[q] > t:
                continue
            i = queue_fifo[h]
            if fetch[i] >= t or (q == _LOAD and busy[_STORE] > t):
                continue
            if q == _STORE and busy[_LOAD] > t:
                continue
            counters = _POPS[q][pops[i]]
            if not all(tokens[k] for k in counters):
                continue
            for k in counters:
                tokens[k] -= 1
            done_at = t + cycles[i]
            start[i] = t
            complete[i] = done_at
            busy[q] = done_at
            running[q] = i
            head[q] = h + 1
            order.append(i)
            if done_at > max_complete:
                max_complete = done_at
        # 3. Token overflow, after this cycle's pops.
        for i, counters in pushed:
            for k in counters:
                if tokens[k] > token_depth and (t, i) < (error_time, error_index):
                    error_time, error_index = t, i
                    error_kind, error_pair = "overflow", divmod(k, _QUEUES)
        if error_time <= t:
            break
        # 4. Fetch.
        if fetching and fetch_at <= t:
            q = queues[next_fetch]
            if q >= 0:
                if len(fifo[q]) - head[q] < depth[q]:
                    fetch[next_fetch] = last_fetch = t
                    fifo[q].append(next_fetch)
                    next_fetch += 1
                    fetch_at = t + 1
                    if progress is not None and next_fetch & 4095 == 0:
                        progress(next_fetch, n)
            else:
                fetch[next_fetch] = last_fetch = t
                fetching = False
                if q == HALT:
                    halted = True
                elif (t + 1, next_fetch) < (error_time, error_index):
                    error_time, error_index, error_kind = t + 1, next_fetch, "illegal"
                next_fetch += 1
        # 5. The next cycle at which anything can change.
        nxt = error_time
        if fetching and fetch_at > t:
            nxt = min(nxt, fetch_at)
        for q in all_queues:
            if running[q] >= 0 and busy[q] < nxt:
                nxt = busy[q]
            if head[q] < len(fifo[q]):
                ready = fetch[fifo[q][head[q]]] + 1
                if t < ready < nxt:
                    nxt = ready
        if nxt == _NEVER:
            break
        t = nxt

    if progress is not None:
        progress(next_fetch, n)
    if error_time <= t:
        return Schedule(
            fetch, start, complete, order, "error", error_time, error_index, error_kind, error_pair
        )
    quiescent = max(last_fetch + 1, max_complete)
    waiting = [fifo[q][head[q]] for q in all_queues if head[q] < len(fifo[q])]
    if halted and not waiting:
        return Schedule(fetch, start, complete, order, "done", quiescent)
    oldest = min(waiting)
    q = queues[oldest]
    lacking = tuple(k // _QUEUES for k in _POPS[q][pops[oldest]] if tokens[k] == 0)
    return Schedule(
        fetch, start, complete, order, "error", quiescent, oldest, "deadlock", waiting_for=lacking
    )
