from __future__ import annotations

import threading

import pytest
import torch

from fetalflex.backends.batching import MicroBatcher


def _call(x, t, layout, cond, cs):  # type: ignore[no-untyped-def]
    # Row-wise function of the inputs: result must not depend on batch neighbours.
    return x * 2 + t.view(-1, 1, 1, 1).float() + cs.view(-1, 1, 1, 1)


def _inputs(k: int, rows: int = 2) -> tuple[torch.Tensor, ...]:
    return (torch.full((rows, 1, 2, 2), float(k)), torch.full((rows,), k),
            torch.zeros(rows, 3, 2, 2), torch.zeros(rows, 4), torch.ones(rows))


def _call_together(mb: MicroBatcher, n: int) -> dict[int, torch.Tensor]:
    """n threads call ``mb`` at once (caller k sends ``_inputs(k)``); then it is closed."""
    results: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(n)

    def worker(k: int) -> None:
        barrier.wait()
        results[k] = mb(*_inputs(k))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    mb.close()
    return results


def test_concurrent_callers_share_calls_and_get_their_rows() -> None:
    mb = MicroBatcher(_call, max_batch=16, window_s=0.05)
    results = _call_together(mb, 8)
    for k in range(8):
        assert torch.equal(results[k], _call(*_inputs(k)))
    assert mb.stats.jobs == 8 and mb.stats.rows == 16
    assert mb.stats.calls < 8  # merged
    assert mb.stats.max_rows <= 16
    # Bounded: one histogram entry per distinct batch size, counts summing to the calls.
    assert sum(mb.stats.rows_histogram.values()) == mb.stats.calls
    assert sum(k * v for k, v in mb.stats.rows_histogram.items()) == mb.stats.rows


def test_errors_reach_every_waiter() -> None:
    def bad(*a):  # type: ignore[no-untyped-def]
        raise RuntimeError("backend down")

    mb = MicroBatcher(bad, window_s=0.0)
    with pytest.raises(RuntimeError, match="backend down"):
        mb(*_inputs(1))
    mb.close()
    with pytest.raises(RuntimeError, match="closed"):
        mb(*_inputs(1))


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(_call, max_batch=0)


class _NoWaitQueue:
    """A queue whose blocking get fails the test: the batcher must not wait for others."""

    def __init__(self, q):  # type: ignore[no-untyped-def]
        self.q = q

    def get(self, timeout=None):  # type: ignore[no-untyped-def]
        if timeout is not None and self.q.empty():
            raise AssertionError("waited for the window with every session already in")
        return self.q.get(timeout=timeout)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.q, name)


def test_sessions_end_the_wait_when_every_generation_is_in() -> None:
    from fetalflex.backends.batching import _Job

    mb = MicroBatcher(_call, max_batch=16, window_s=60.0)
    mb.close()  # drive _gather by hand, no worker thread
    mb._q = _NoWaitQueue(mb._q)  # type: ignore[assignment]
    with mb.session():
        assert mb.sessions == 1
        jobs = mb._gather(_Job(_inputs(1)))
        assert len(jobs) == 1
        with mb.session():  # two in flight: both steps queued -> one batch, no wait
            mb._q.put(_Job(_inputs(3)))
            jobs = mb._gather(_Job(_inputs(2)))
            assert [int(j.inputs[1][0]) for j in jobs] == [2, 3]
    assert mb.sessions == 0


def test_without_sessions_the_window_still_gathers() -> None:
    mb = MicroBatcher(_call, max_batch=16, window_s=0.05)
    results = _call_together(mb, 4)
    assert all(torch.equal(results[k], _call(*_inputs(k))) for k in range(4))
    assert mb.stats.jobs == 4
