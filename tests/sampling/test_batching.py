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


def test_concurrent_callers_share_calls_and_get_their_rows() -> None:
    mb = MicroBatcher(_call, max_batch=16, window_s=0.05)
    results: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        results[k] = mb(*_inputs(k))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    mb.close()
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
