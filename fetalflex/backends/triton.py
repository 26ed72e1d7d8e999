"""Triton backend for the denoiser seam: the served model as a model call.

* Inputs are built from :mod:`fetalflex.model.signature` once per batch size and reused.
* Each call's deadline is the request's remaining budget (:data:`REQUEST_DEADLINE`, set
  by the orchestrator per generation), capped by ``call_timeout_s``.
* Only ``UNAVAILABLE`` is retried, with jittered exponential backoff, for at most
  ``retry_budget_s`` and never past the deadline; then :class:`TritonUnavailableError`.
  Other failures raise :class:`TritonError` with Triton's message.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fetalflex.model.signature import INPUTS, OUTPUT_NAMES, TRITON_DTYPES, TRITON_MAX_BATCH

REQUEST_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "fetalflex_request_deadline", default=None)  # time.monotonic() seconds

_NP_TO_TRITON = {np.dtype(k): v for k, v in TRITON_DTYPES.items()}


class TritonError(RuntimeError):
    """Triton answered with an error that a retry will not fix."""


class TritonUnavailableError(TritonError):
    """Triton is unreachable or not ready (gRPC UNAVAILABLE) within the budget."""


class TritonDeadlineError(TritonError):
    """The request's time budget ran out."""


@contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    token = REQUEST_DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        REQUEST_DEADLINE.reset(token)


class TritonModelCall:
    def __init__(self, url: str, model: str, call_timeout_s: float = 30.0,
                 retry_budget_s: float = 1.0, backoff_s: float = 0.05,
                 shared_memory: bool = False, shm_max_rows: int = 64,
                 max_rows: int = TRITON_MAX_BATCH) -> None:
        import tritonclient.grpc as grpcclient

        self._g = grpcclient
        self.url, self.model = url, model
        self.call_timeout_s = call_timeout_s
        self.retry_budget_s = retry_budget_s
        self.backoff_s = backoff_s
        self.client = grpcclient.InferenceServerClient(url)
        self._lock = threading.Lock()
        self._local = threading.local()  # InferInputs are mutable: one set per thread
        self._outputs = [grpcclient.InferRequestedOutput(n) for n in OUTPUT_NAMES]
        # System shared memory (orchestrator and Triton on one host): tensors travel
        # through /dev/shm regions instead of the gRPC message; one pair per thread.
        self.shared_memory = shared_memory
        self.shm_max_rows = shm_max_rows
        # The served model's max_batch_size: a larger call goes as several in order.
        self.max_rows = max_rows
        self._regions: list[tuple[str, object]] = []

    def _built(self, n: int, arrays: list[np.ndarray]) -> list[object]:
        cache: dict[int, list[Any]] = self._local.__dict__.setdefault("inputs", {})
        ins = cache.get(n)
        if ins is None:
            ins = [self._g.InferInput(spec.name, list(a.shape), _NP_TO_TRITON[a.dtype])
                   for spec, a in zip(INPUTS, arrays, strict=True)]
            cache[n] = ins
        for i, a in zip(ins, arrays, strict=True):
            i.set_data_from_numpy(a)
        return ins

    def _shm(self, arrays: list[np.ndarray]) -> tuple[list[object], list[object], object,
                                                        tuple[int, ...]]:
        """Inputs/outputs bound to this thread's shared-memory regions."""
        import tritonclient.utils.shared_memory as shm

        n = arrays[0].shape[0]
        if n > self.shm_max_rows:
            raise TritonError(f"shared memory: batch {n} exceeds shm_max_rows "
                              f"{self.shm_max_rows}")
        st = self._local.__dict__
        if "shm_in" not in st:
            row_in = sum(a[0].nbytes for a in arrays)
            out_shape = arrays[0].shape[1:]
            row_out = int(np.prod(out_shape)) * 4
            tag = f"fetalflex_{id(self):x}_{threading.get_ident():x}"
            for kind, size in (("in", row_in), ("out", row_out)):
                name = f"{tag}_{kind}"
                h = shm.create_shared_memory_region(name, f"/{name}", size * self.shm_max_rows)
                st[f"shm_{kind}"] = (name, h, size * self.shm_max_rows)
                with self._lock:
                    self._regions.append((name, h))
            st["shm_registered"] = set()
        client = self.client
        if id(client) not in st["shm_registered"]:
            for kind in ("in", "out"):
                name, _h, size = st[f"shm_{kind}"]
                with suppress(Exception):
                    client.unregister_system_shared_memory(name)
                client.register_system_shared_memory(name, f"/{name}", size)
            st["shm_registered"].add(id(client))
        in_name, in_h, _ = st["shm_in"]
        out_name, out_h, _ = st["shm_out"]
        ins, offset = [], 0
        for spec, a in zip(INPUTS, arrays, strict=True):
            i = self._g.InferInput(spec.name, list(a.shape), _NP_TO_TRITON[a.dtype])
            shm.set_shared_memory_region(in_h, [a], offset=offset)
            i.set_shared_memory(in_name, a.nbytes, offset=offset)
            ins.append(i)
            offset += a.nbytes
        out_shape = (n, *arrays[0].shape[1:])
        o = self._g.InferRequestedOutput(OUTPUT_NAMES[0])
        o.set_shared_memory(out_name, int(np.prod(out_shape)) * 4)
        return ins, [o], out_h, out_shape

    def close(self) -> None:
        import tritonclient.utils.shared_memory as shm

        for name, h in self._regions:
            with suppress(Exception):
                self.client.unregister_system_shared_memory(name)
            with suppress(Exception):
                shm.destroy_shared_memory_region(h)
        self._regions.clear()
        with suppress(Exception):
            self.client.close()

    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor:
        from tritonclient.utils import InferenceServerException

        n = int(x_t.shape[0])
        if n > self.max_rows:
            m = self.max_rows
            return torch.cat([self(x_t[i:i + m], t[i:i + m], layout[i:i + m], cond[i:i + m],
                                   control_scale[i:i + m]) for i in range(0, n, m)])
        arrays = []
        for spec, v in zip(INPUTS, (x_t, t, layout, cond, control_scale), strict=True):
            a = np.ascontiguousarray(v.detach().cpu().numpy(), dtype=spec.dtype)
            arrays.append(a.reshape(n, 1) if a.ndim == 1 else a)  # per-item [1]
        start = time.monotonic()
        deadline = REQUEST_DEADLINE.get()
        attempt = 0
        while True:
            now = time.monotonic()
            remaining = self.call_timeout_s if deadline is None else min(
                self.call_timeout_s, deadline - now)
            if remaining <= 0:
                raise TritonDeadlineError(f"triton {self.model}: request deadline exceeded")
            client = self.client
            try:
                if self.shared_memory:
                    import tritonclient.utils.shared_memory as shm

                    ins, outs, out_h, out_shape = self._shm(arrays)
                    client.infer(self.model, ins, outputs=outs, client_timeout=remaining)
                    return torch.from_numpy(np.array(
                        shm.get_contents_as_numpy(out_h, np.float32, out_shape)))
                res = client.infer(self.model, self._built(n, arrays),
                                   outputs=self._outputs, client_timeout=remaining)
                return torch.from_numpy(np.array(res.as_numpy(OUTPUT_NAMES[0])))
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                if "DEADLINE_EXCEEDED" in status:
                    raise TritonDeadlineError(f"triton {self.model}: deadline exceeded "
                                           f"({exc.message()})") from None
                if "UNAVAILABLE" not in status:
                    raise TritonError(f"triton {self.model} at {self.url}: {status} "
                                      f"{exc.message()}") from None
                attempt += 1
                self._reconnect(client)
                sleep = self.backoff_s * (2 ** min(attempt, 6)) * random.uniform(0.5, 1.5)
                spent = time.monotonic() - start
                budget = self.retry_budget_s - spent
                if deadline is not None:
                    budget = min(budget, deadline - time.monotonic())
                if sleep >= budget:
                    raise TritonUnavailableError(
                        f"triton {self.model} at {self.url} is unavailable "
                        f"({attempt} attempts in {spent:.2f} s): {exc.message()}") from None
                time.sleep(sleep)

    def _reconnect(self, failed: Any) -> None:
        """A fresh channel: gRPC's own reconnect backoff would outlast our retry budget
        after a server restart."""
        with self._lock:
            if self.client is failed:
                old = self.client
                self.client = self._g.InferenceServerClient(self.url)
                with suppress(Exception):  # closing a broken channel may fail
                    old.close()

    def check_ready(self) -> None:
        try:
            ok = self.client.is_model_ready(self.model)
        except Exception as exc:  # noqa: BLE001 - connection errors of any kind
            raise TritonUnavailableError(f"triton at {self.url}: {exc}") from None
        if not ok:
            raise TritonUnavailableError(f"triton at {self.url}: model {self.model} is not ready")
