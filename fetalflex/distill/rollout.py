"""The student on its own states: free-running rollouts from the teacher's starting noise.

Training and the x0 error of ``student.py`` are *teacher-forced*: every student step starts
from the teacher's state. When the student samples it starts each step from its own
previous output, so its errors compound, and the error that matters for the images is the
free-running one. This module steps the student exactly as the service samples it (DDIM, eta
0, x0 clipped to the image range and the noise estimate recomputed from the clipped x0,
guidance 1: one conditional row per step) and gives

- ``rollout_errors``: per student step, the mean squared distance of the student's own state
  after that step to the teacher's state at the same timestep, from the same noise (the last
  one is the final image against the teacher's image);
- ``own_rows``: the student's own state at a given step of given trajectories and the x0
  that lands from there where the teacher, asked in the loop (``TeacherSegment``), goes
  from that state (``x0_target``, the inverse of ``ddim_move``): rollout training rows
  (``train_student(rollout=...)``). The student learns the teacher's steps on the states
  it visits itself, not only on the teacher's own path (DAgger, Ross et al. 2011).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fetalflex.anatomy.layout import one_hot
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.distill.trajectories import Trajectories
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.diffusion import predict_x0
from fetalflex.sampling.ddim import ddim_scheduler
from fetalflex.sampling.denoisers import ModelCall, contrast_conditions, guided


def ddim_move(x: Tensor, x0: Tensor, t: int, t_next: int | None, ac: Tensor) -> Tensor:
    """One DDIM (eta 0) move from ``x`` at ``t`` to ``t_next`` along the line through
    ``x0`` (None: the end, where the state is ``x0``)."""
    if t_next is None:
        return x0
    a, a2 = ac[t].float(), ac[t_next].float()
    eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    return a2.sqrt() * x0 + (1 - a2).sqrt() * eps


def x0_target(x: Tensor, nxt: Tensor, t: Tensor, t_next: Tensor | None, ac: Tensor
              ) -> Tensor:
    """The x0 whose DDIM move from ``x`` at ``t`` lands on ``nxt`` at ``t_next`` (None:
    the end, where it is ``nxt`` itself); ``t``, ``t_next`` broadcast against the rows."""
    if t_next is None:
        return nxt
    shape = (-1,) + (1,) * (x.dim() - 1)
    a, a2 = ac[t].float().reshape(shape), ac[t_next].float().reshape(shape)
    al, si, al2, si2 = a.sqrt(), (1 - a).sqrt(), a2.sqrt(), (1 - a2).sqrt()
    return (nxt - si2 / si * x) / (al2 - si2 * al / si)


def student_x0(model: FetalFlexDenoiser, x: Tensor, t: int, lay: Tensor, cond: Tensor,
               ac: Tensor, bf16: bool = False) -> Tensor:
    """The model's x0 for (N, 1, H, W) states at timestep ``t``, clipped to [-1, 1] as the
    sampler clips it."""
    tt = torch.full((x.shape[0],), t)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        pred = model(x, tt, lay, cond, torch.ones(x.shape[0]))
    return predict_x0(model.config.prediction_type, ac, x, pred.float(), tt).clamp(-1, 1)


def student_step(model: FetalFlexDenoiser, x: Tensor, j: int, timesteps: list[int],
                 lay: Tensor, cond: Tensor, ac: Tensor, bf16: bool = False) -> Tensor:
    """Student step ``j`` (from ``timesteps[j]`` to the next one; after the last: the image)
    as the service samples it."""
    t = timesteps[j]
    nxt = timesteps[j + 1] if j + 1 < len(timesteps) else None
    return ddim_move(x, student_x0(model, x, t, lay, cond, ac, bf16), t, nxt, ac)


@torch.no_grad()
def own_states(model: FetalFlexDenoiser, start: Tensor, steps: Tensor, timesteps: list[int],
               lay: Tensor, cond: Tensor, ac: Tensor, bf16: bool = False) -> Tensor:
    """(N, 1, H, W): for each row, the model's own state after ``steps[row]`` student steps
    from the noise ``start`` (0: the noise itself), sampled as the service samples it."""
    x = start.clone()
    for s in range(int(steps.max()) if len(steps) else 0):
        rows = (steps > s).nonzero().flatten()
        x[rows] = student_step(model, x[rows], s, timesteps, lay[rows], cond[rows], ac, bf16)
    return x


@torch.no_grad()
def rollout_errors(model: FetalFlexDenoiser, traj: Trajectories, idx: Tensor,
                   conds: Tensor, ac: Tensor, batch: int = 16) -> list[float]:
    """Per student step, the mean squared distance of the free-running student's state
    after it to the teacher's state there, on trajectories ``idx`` (``conds``: their
    condition vectors). The last entry is the final image against the teacher's."""
    was_training = model.training
    model.eval()
    k = len(traj.timesteps)
    sums = [0.0] * k
    for s in range(0, len(idx), batch):
        i = idx[s:s + batch]
        st = torch.from_numpy(traj.states[i.numpy()]).float()
        lay = torch.from_numpy(np.stack([one_hot(traj.label_maps[int(q)]) for q in i]))
        x = st[:, 0][:, None]
        for j in range(k):
            x = student_step(model, x, j, traj.timesteps, lay, conds[s:s + batch], ac)
            sums[j] += float(((x[:, 0] - st[:, j + 1]) ** 2).mean()) * len(i)
    model.train(was_training)
    return [round(v / len(idx), 6) for v in sums]


@dataclass(frozen=True)
class TeacherSegment:
    """The teacher in the training loop: its guided DDIM calls between two student
    timesteps, exactly as its trajectories were made (``Engine.sample_states``: the same
    call, guidance per appearance, guidance interval, ``substeps`` calls per student step)."""

    call: ModelCall
    cfg: DenoiserConfig
    guidance: dict[str, float]  # per appearance (the trajectories' own)
    substeps: int

    @torch.no_grad()
    def next_states(self, x: Tensor, steps: Tensor, timesteps: list[int], lay: Tensor,
                    cond: Tensor, appearances: list[str]) -> Tensor:
        """(N, 1, H, W): where the teacher takes each row's state ``x`` at student step
        ``steps[row]`` (its timestep ``timesteps[steps[row]]``) to at the next one (after
        the last: the image)."""
        sch = ddim_scheduler(self.cfg)
        sch.set_timesteps(len(timesteps) * self.substeps)
        grid = [int(t) for t in sch.timesteps]
        w = torch.tensor([self.guidance[a] for a in appearances])
        out = x.clone()
        for j in sorted({int(s) for s in steps}):
            rows = (steps == j).nonzero().flatten()
            if grid[j * self.substeps] != timesteps[j]:
                raise ValueError(f"teacher grid {grid} does not pass through the student's "
                                 f"timestep {timesteps[j]}")
            den = guided(self.call, lay[rows], cond[rows], w[rows], 1.0,
                         guidance_below_t=self.cfg.sampling.guidance_below_t,
                         contrast=self._contrast(cond[rows], [appearances[int(r)] for r in rows]))
            xr = out[rows]
            for t in grid[j * self.substeps:(j + 1) * self.substeps]:
                tt = torch.full((len(rows),), t, dtype=torch.long)
                xr = sch.step(den(xr, tt), t, xr, eta=0.0,
                              use_clipped_model_output=True).prev_sample
            out[rows] = xr
        return out

    def _contrast(self, cond: Tensor, looks: list[str]) -> tuple[Tensor, Tensor] | None:
        """The teacher's plane contrast for these rows (their planes read from ``cond``)."""
        planes = [PLANE_CODES[int(k)] for k in cond[:, :self.cfg.num_planes].argmax(1)]
        return contrast_conditions(self.cfg, cond, planes, looks)


def own_rows(model: FetalFlexDenoiser, teacher: TeacherSegment, states: Tensor, steps: Tensor,
             timesteps: list[int], lay: Tensor, cond: Tensor, appearances: list[str],
             ac: Tensor, bf16: bool = False) -> tuple[Tensor, Tensor]:
    """Rollout training rows: for trajectories ``states`` (N, K + 1, H, W) and student steps
    ``steps`` (each >= 1), the student's own state there (N, 1, H, W) and the x0 whose move
    lands from it where the teacher goes from it (``TeacherSegment``; at the last step, the
    teacher's image from there). Not the stored trajectory's next state: from a state that
    has drifted, the teacher goes elsewhere, and landing back on the stored path is a target
    the student cannot infer from its input (its state does not say which path it left).
    Neither target brought the free-running student closer to the stored paths in session
    24's runs (docs/EVALUATION.md)."""
    k = len(timesteps)
    x = own_states(model, states[:, 0][:, None].float(), steps, timesteps, lay, cond, ac, bf16)
    nxt = teacher.next_states(x, steps, timesteps, lay, cond, appearances)
    tgt = nxt.clone()  # the last step's target: the image
    mid = (steps + 1 < k).nonzero().flatten()
    if len(mid):
        t_all = torch.tensor(timesteps)
        tgt[mid] = x0_target(x[mid], nxt[mid], t_all[steps[mid]], t_all[steps[mid] + 1], ac)
    return x, tgt
