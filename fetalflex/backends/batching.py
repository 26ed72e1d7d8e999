"""Micro-batching: concurrent generations at a step at the same time share one call.

:class:`MicroBatcher` wraps a model call and is itself a model call. Callers (one per
generation, each in its own thread) block while a worker thread gathers rows for up to
``window_s`` after the first arrival (or until ``max_batch`` rows), runs ONE batched call,
and routes each caller's slice back. Each row's result depends only on its own inputs,
so a request gives the same image alone or batched (up to float rounding of the kernels).

Sessions: a caller that wraps its generation in ``with batcher.session():`` tells the
batcher how many generations are in flight, and a batch stops waiting as soon as it holds a
step of every one of them. Alone, a generation then never waits for the window (measured
before: 4 ms per step, a sixth of a DPM-Solver++-6 step at concurrency 1); callers that
open no session keep the plain window.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fetalflex.sampling.denoisers import ModelCall


@dataclass
class _Job:
    inputs: tuple[Tensor, ...]
    future: Future[Tensor] = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return int(self.inputs[0].shape[0])


@dataclass
class BatchStats:
    """Counters of a micro-batcher over the life of a server: bounded (a histogram of batch
    sizes by row count, at most ``max_batch`` keys), never one entry per call."""

    calls: int = 0
    rows: int = 0
    jobs: int = 0
    max_rows: int = 0
    rows_histogram: dict[int, int] = field(default_factory=dict)

    def record(self, rows: int, jobs: int) -> None:
        self.calls += 1
        self.rows += rows
        self.jobs += jobs
        self.max_rows = max(self.max_rows, rows)
        self.rows_histogram[rows] = self.rows_histogram.get(rows, 0) + 1

    @property
    def mean_batch_rows(self) -> float:
        return self.rows / self.calls if self.calls else 0.0


class MicroBatcher:
    def __init__(self, call: ModelCall, max_batch: int = 32, window_s: float = 0.004,
                 name: str = "denoiser") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"window_s: must be >= 0, got {window_s}")
        self.call = call
        self.max_batch = max_batch
        self.window_s = window_s
        self.stats = BatchStats()
        self._sessions = 0
        self._sessions_lock = threading.Lock()
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=f"microbatch-{name}",
                                        daemon=True)
        self._worker.start()

    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor:
        if self._closed:
            raise RuntimeError("micro-batcher is closed")
        job = _Job((x_t, t, layout, cond, control_scale))
        self._q.put(job)
        return job.future.result()

    @contextmanager
    def session(self) -> Iterator[None]:
        """One generation in flight (its steps call this batcher from one thread)."""
        with self._sessions_lock:
            self._sessions += 1
        try:
            yield
        finally:
            with self._sessions_lock:
                self._sessions -= 1

    @property
    def sessions(self) -> int:
        return self._sessions

    def close(self) -> None:
        self._closed = True
        self._q.put(None)
        self._worker.join(timeout=5)

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, rows = [first], first.rows
        deadline = time.perf_counter() + self.window_s
        while rows < self.max_batch:
            # Every generation in flight is in: take only what is already queued.
            everyone_in = 0 < self._sessions <= len(jobs)
            remaining = 0.0 if everyone_in else deadline - time.perf_counter()
            try:
                job = self._q.get(timeout=remaining) if remaining > 0 else \
                    self._q.get_nowait()
            except queue.Empty:
                break
            if job is None or rows + job.rows > self.max_batch:
                self._q.put(job)  # stop signal, or the next batch (order not promised)
                break
            jobs.append(job)
            rows += job.rows
        return jobs

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs = self._gather(first)
            try:
                merged = [torch.cat([j.inputs[k] for j in jobs]) for k in range(5)]
                out = self.call(*merged)
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
                for j in jobs:
                    j.future.set_exception(exc)
                continue
            rows = sum(j.rows for j in jobs)
            self.stats.record(rows, len(jobs))
            start = 0
            for j in jobs:
                j.future.set_result(out[start:start + j.rows])
                start += j.rows
