"""Train the student: one DDIM step of the student, unguided (a single conditional row),
lands where ``substeps`` guided teacher steps landed (``trajectories.py``).

For a student step from state x at timestep t to the teacher's next state x' at t' (alpha,
sigma: the noise schedule's), DDIM with eta 0 moves along the line through its x0 estimate:
x' = alpha' x0 + sigma' (x - alpha x0) / sigma. The x0 that lands exactly on x' is
x0* = (x' - sigma'/sigma x) / (alpha' - sigma' alpha / sigma) (at the last step alpha' = 1,
sigma' = 0: x0* = x', the teacher's image). The student (v-prediction, x0 = alpha x -
sigma v) is trained with the mean squared error of its x0 against x0*. It starts from the
teacher's weights; its config says how to sample it (``sampling``: K DDIM steps, guidance 1:
K denoiser rows per image), so requests that leave the sampling unset get exactly that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fetalflex.anatomy.layout import one_hot
from fetalflex.anatomy.planes import plane_index
from fetalflex.appearance import appearance_index
from fetalflex.distill.trajectories import Trajectories
from fetalflex.model.config import DenoiserConfig, SamplingDefaults
from fetalflex.model.denoiser import FetalFlexDenoiser, condition_vector
from fetalflex.model.diffusion import alphas_cumprod_for
from fetalflex.model.hardware import bf16_native
from fetalflex.training.ema import EMA

Log = Callable[[str], None]


def x0_targets(states: Tensor, timesteps: list[int], ac: Tensor) -> Tensor:
    """(N, K + 1, H, W) states -> (N, K, H, W): the x0 each student step must predict."""
    k = len(timesteps)
    out = []
    for j in range(k):
        x, nxt = states[:, j].float(), states[:, j + 1].float()
        a = ac[timesteps[j]].float()
        al, si = a.sqrt(), (1 - a).sqrt()
        if j + 1 == k:
            out.append(nxt)
            continue
        a2 = ac[timesteps[j + 1]].float()
        al2, si2 = a2.sqrt(), (1 - a2).sqrt()
        out.append((nxt - si2 / si * x) / (al2 - si2 * al / si))
    return torch.stack(out, dim=1)


def student_config(teacher: DenoiserConfig, steps: int) -> DenoiserConfig:
    """The teacher's architecture; sampled with ``steps`` DDIM steps at guidance 1, marked
    ``guidance_folded`` (two-stage then runs it unguided on its own grid)."""
    return teacher.model_copy(update={"sampling": SamplingDefaults(
        steps=steps, sampler="ddim", guidance=1.0,
        guidance_by_appearance={a: 1.0 for a in teacher.appearances},
        guidance_folded=True)})


def train_student(teacher_dir: Path, traj: Trajectories, out: Path, steps: int,
                  batch: int = 16, lr: float = 5e-5, ema_decay: float = 0.999, seed: int = 0,
                  checkpoint_every: int = 200, log: Log = print,
                  deadline: float | None = None) -> Path:
    """Train (resuming from ``out/checkpoint.pt``) and write the EMA student to
    ``out/final``; returns that folder. ``deadline`` (``time.monotonic()``) stops early
    with a checkpoint and the weights as they are."""
    teacher = FetalFlexDenoiser.load(teacher_dir)
    k = len(traj.timesteps)
    cfg = student_config(teacher.config, k)
    model = FetalFlexDenoiser(cfg)
    model.load_state_dict(teacher.state_dict())
    del teacher
    ema = EMA(model, ema_decay)
    ac = alphas_cumprod_for(cfg)
    states = torch.from_numpy(traj.states)
    targets = x0_targets(states, traj.timesteps, ac).to(torch.float16)
    layouts = traj.label_maps
    plane = torch.tensor([plane_index(p) for p in traj.planes])
    ga = torch.from_numpy(traj.ga.astype(np.float32))
    app = (torch.tensor([appearance_index(a, cfg.appearances) for a in traj.appearances])
           if cfg.appearances else None)
    cond_all = condition_vector(plane, ga, cfg.num_planes, app, len(cfg.appearances))
    t_all = torch.tensor(traj.timesteps)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    done = 0
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        ck = torch.load(ckpt, weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        done = int(ck["step"])
    out.mkdir(parents=True, exist_ok=True)
    bf16 = bf16_native()
    model.train()
    n = len(traj.planes)
    t0, losses = time.perf_counter(), []
    stopped = False
    for step in range(done, steps):
        if deadline is not None and time.monotonic() >= deadline:
            stopped = True
            break
        i = torch.randint(0, n, (min(batch, n),), generator=gen)
        j = torch.randint(0, k, (len(i),), generator=gen)
        x = states[i, j][:, None].float()
        tgt = targets[i, j][:, None].float()
        t = t_all[j]
        a = ac[t].float()[:, None, None, None]
        lay = torch.from_numpy(np.stack([one_hot(layouts[int(q)]) for q in i]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            v = model(x, t, lay, cond_all[i], torch.ones(len(i)))
        x0 = a.sqrt() * x - (1 - a).sqrt() * v.float()
        loss = nn.functional.mse_loss(x0, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step + 1)
        losses.append(loss.item())
        done = step + 1
        if done % 25 == 0 or done == steps:
            with (out / "log.jsonl").open("a") as f:
                f.write(json.dumps({"step": done, "loss": round(float(np.mean(losses)), 6),
                                    "steps_per_s": round(len(losses) / max(
                                        time.perf_counter() - t0, 1e-9), 3)}) + "\n")
            t0, losses = time.perf_counter(), []
        if done % checkpoint_every == 0:
            _checkpoint(ckpt, model, ema, opt, gen, done)
    _checkpoint(ckpt, model, ema, opt, gen, done)
    meta: dict[str, Any] = {"distilled_from": traj.teacher, "student_steps": k,
                            "teacher_guidance": traj.guidance, "trajectories": n,
                            "train_steps": done, "timesteps": traj.timesteps}
    if stopped:
        meta["stopped_at_deadline"] = True
    final = out / "final"
    model.save(final, state=ema.state_dict(), meta=meta)
    log(f"student: {done} steps; weights {final}")
    return final


def _checkpoint(path: Path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer,
                gen: torch.Generator, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                "opt": opt.state_dict(), "gen": gen.get_state(), "step": step}, tmp)
    tmp.replace(path)
