"""Sampling schedules as data: pure functions returning plain lists (asserted in tests)."""

from __future__ import annotations

from fetalflex.errors import InvalidRequestError


def trailing_timesteps(num_train_timesteps: int, steps: int, start: int | None = None) -> list[int]:
    """Descending timesteps, 'trailing' spacing (the first is ``start``, default T-1).

    With ``start`` < T-1 this is the schedule of an img2img / stage-2 refinement that
    begins at an intermediate noise level.
    """
    if steps < 1:
        raise InvalidRequestError("steps", f"must be at least 1, got {steps}")
    top = num_train_timesteps - 1 if start is None else start
    if not 0 <= top < num_train_timesteps:
        raise InvalidRequestError("start", f"must be within [0, {num_train_timesteps - 1}], "
                                           f"got {start}")
    ratio = (top + 1) / steps
    ts = [round(top + 1 - i * ratio) - 1 for i in range(steps)]
    out: list[int] = []
    for t in ts:  # de-duplicate when steps > top + 1
        t = max(t, 0)
        if not out or t < out[-1]:
            out.append(t)
    return out


def repaint_transitions(timesteps: list[int], jump_length: int,
                        jump_n_sample: int) -> list[tuple[int, int]]:
    """RePaint's jump schedule on a coarse step list, as (t_from, t_to) transitions.

    ``t_to < t_from`` is a denoising step (one denoiser call; ``t_to = -1`` means x0);
    ``t_to > t_from`` re-noises (no call). Every ``jump_length`` steps the chain jumps
    back ``jump_length`` steps, ``jump_n_sample - 1`` times (Lugmayr et al. 2022, Alg. 1),
    mirroring diffusers' ``RePaintScheduler.set_timesteps`` on our coarse grid.
    """
    if jump_length < 1 or jump_n_sample < 1:
        raise InvalidRequestError("jump_length" if jump_length < 1 else "jump_n_sample",
                                  "must be at least 1")
    chain = [*timesteps, -1]
    n = len(timesteps)
    jumps = {j: jump_n_sample - 1 for j in range(jump_length, n, jump_length)}
    out: list[tuple[int, int]] = []
    i = 0
    while i < n:
        out.append((chain[i], chain[i + 1]))
        i += 1
        if jumps.get(i, 0) > 0 and i < n:
            jumps[i] -= 1
            for _ in range(jump_length):
                out.append((chain[i], chain[i - 1]))
                i -= 1
    return out


def count_calls(transitions: list[tuple[int, int]]) -> int:
    return sum(1 for a, b in transitions if b < a)
