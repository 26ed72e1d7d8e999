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

With held-out trajectories (the teacher on validation layouts, never trained on), each
checkpoint logs the EMA student's x0 error per student step on them beside the same error
on as many training trajectories: the gap says when more trajectories, not more steps,
are what the student needs.
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
from fetalflex.distill.figure import plot_distill
from fetalflex.distill.rollout import TeacherSegment, own_rows, rollout_errors, x0_target
from fetalflex.distill.trajectories import Trajectories
from fetalflex.model.config import DenoiserConfig, SamplingDefaults
from fetalflex.model.denoiser import FetalFlexDenoiser, condition_vector
from fetalflex.model.diffusion import alphas_cumprod_for, predict_x0
from fetalflex.model.hardware import bf16_native
from fetalflex.training.ema import EMA

Log = Callable[[str], None]
LOG_EVERY = 25  # training steps per loss row of log.jsonl (their mean loss)
INIT_WARMUP = 100  # steps of linear learning-rate warm-up when going on from a student


def append_log(out: Path, row: dict[str, Any]) -> None:
    """One row of the run's ``log.jsonl``."""
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def x0_targets(states: Tensor, timesteps: list[int], ac: Tensor) -> Tensor:
    """(N, K + 1, H, W) states -> (N, K, H, W): the x0 each student step must predict."""
    k = len(timesteps)
    out = []
    for j in range(k):
        x, nxt = states[:, j].float(), states[:, j + 1].float()
        t_next = torch.tensor([timesteps[j + 1]]) if j + 1 < k else None
        out.append(x0_target(x, nxt, torch.tensor([timesteps[j]]), t_next, ac))
    return torch.stack(out, dim=1)


def trajectory_conds(traj: Trajectories, idx: Tensor, cfg: DenoiserConfig) -> Tensor:
    plane = torch.tensor([plane_index(traj.planes[int(q)]) for q in idx])
    ga = torch.from_numpy(traj.ga[idx.numpy()].astype(np.float32))
    app = (torch.tensor([appearance_index(traj.appearances[int(q)], cfg.appearances)
                         for q in idx]) if cfg.appearances else None)
    return condition_vector(plane, ga, cfg.num_planes, app, len(cfg.appearances))


@torch.no_grad()
def x0_errors(model: FetalFlexDenoiser, traj: Trajectories, idx: Tensor, batch: int = 16
              ) -> list[float]:
    """Per student step, the mean squared error of the model's x0 against its target on
    trajectories ``idx`` (what training minimises, measured without training)."""
    was_training = model.training
    model.eval()
    ac = alphas_cumprod_for(model.config)
    sums = [0.0] * len(traj.timesteps)
    for s in range(0, len(idx), batch):
        i = idx[s:s + batch]
        st = torch.from_numpy(traj.states[i.numpy()])
        tg = x0_targets(st, traj.timesteps, ac)
        lay = torch.from_numpy(np.stack([one_hot(traj.label_maps[int(q)]) for q in i]))
        cond = trajectory_conds(traj, i, model.config)
        for j, t in enumerate(traj.timesteps):
            x = st[:, j][:, None].float()
            tt = torch.full((len(i),), t)
            x0 = predict_x0(model.config.prediction_type, ac, x,
                            model(x, tt, lay, cond, torch.ones(len(i))).float(), tt)
            sums[j] += float(((x0[:, 0] - tg[:, j]) ** 2).mean()) * len(i)
    model.train(was_training)
    return [round(v / len(idx), 6) for v in sums]


def fit_indices(n: int, m: int, seed: int) -> Tensor:
    """The training trajectories measured beside ``m`` held-out ones: as many, drawn
    once per seed."""
    return torch.from_numpy(np.random.default_rng(seed).choice(n, min(n, m), replace=False))


def error_row(model: FetalFlexDenoiser, traj: Trajectories, holdout: Trajectories,
              fit_idx: Tensor) -> dict[str, Any]:
    """The x0 error per student step on training trajectories ``fit_idx`` and on every
    held-out one, and the ratio of their means."""
    fit = x0_errors(model, traj, fit_idx)
    held_idx = torch.arange(len(holdout.planes))
    held = x0_errors(model, holdout, held_idx)
    ac = alphas_cumprod_for(model.config)
    return {"fit_x0_error": fit, "holdout_x0_error": held,
            "holdout_over_fit": round(float(np.mean(held)) / max(float(np.mean(fit)), 1e-12),
                                      3),
            "fit_rollout_error": rollout_errors(
                model, traj, fit_idx, trajectory_conds(traj, fit_idx, model.config), ac),
            "holdout_rollout_error": rollout_errors(
                model, holdout, held_idx, trajectory_conds(holdout, held_idx, model.config), ac)}


def check_rollout(rollout: float, student_steps: int, name: str = "rollout") -> None:
    """The named error for a rollout fraction a run cannot train with (``name``: how the
    caller calls it)."""
    if not 0.0 <= rollout <= 1.0:
        raise ValueError(f"{name}: a fraction in [0, 1], got {rollout}")
    if rollout > 0 and student_steps == 1:
        raise ValueError(f"{name}: a 1-step student always starts from the noise (no own "
                         "state to train from); leave --rollout at 0 or use --student-steps > 1")


def check_student(weights: Path, teacher_hash: str, timesteps: list[int], image_size: int,
                  appearances: set[str], flag: str = "--measure", substeps: int | None = None
                  ) -> tuple[FetalFlexDenoiser, dict[str, Any]]:
    """The student at ``weights`` and its metadata; refused for ``--measure`` when it is
    not a student of this teacher on this grid (its numbers would look plausible and mean
    nothing)."""
    model = FetalFlexDenoiser.load(weights)
    cfg, meta = model.config, FetalFlexDenoiser.read_meta(weights)
    why = []
    if meta.get("distilled_from") != teacher_hash:
        why.append(f"distilled from {str(meta.get('distilled_from'))[:12]}, not from this "
                   f"teacher {teacher_hash[:12]}")
    if meta.get("timesteps") != list(timesteps):
        why.append(f"its timesteps {meta.get('timesteps')}, this run's {list(timesteps)}")
    if substeps is not None and meta.get("substeps", substeps) != substeps:
        # students written before the metadata said it pass: their grid check is all there is
        why.append(f"{meta['substeps']} teacher steps per student step, this run's {substeps}")
    if cfg.image_size != image_size:
        why.append(f"{cfg.image_size} px, this run's trajectories {image_size} px")
    missing = appearances - set(cfg.appearances or ["phantom"])
    if missing:
        why.append(f"no {sorted(missing)} appearance")
    if why:
        raise ValueError(f"{flag} {weights}: not a student of this run ({'; '.join(why)}); "
                         f"pass weights that `fetalflex distill` wrote into OUT/final with "
                         f"the same --teacher, --student-steps and --substeps")
    return model, meta


def measure_students(weights: list[Path], traj: Trajectories, holdout: Trajectories,
                     seed: int, substeps: int | None = None) -> list[dict[str, Any]]:
    """The error rows of trained students (``OUT/final`` or a copy of it) on one run's
    trajectories, without training: what ``distill --measure`` prints."""
    rows = []
    fit_idx = fit_indices(len(traj.planes), len(holdout.planes), seed)
    size = int(traj.states.shape[-1])
    for w in weights:
        model, meta = check_student(w, traj.teacher, traj.timesteps, size,
                                    set(traj.appearances) | set(holdout.appearances),
                                    substeps=substeps)
        rows.append({"weights": str(w), "train_steps": meta.get("train_steps"),
                     "trained_on_trajectories": meta.get("trajectories"),
                     "measured_on_trajectories": len(traj.planes),
                     "holdout_trajectories": len(holdout.planes),
                     **error_row(model, traj, holdout, fit_idx)})
    return rows


def student_config(teacher: DenoiserConfig, steps: int) -> DenoiserConfig:
    """The teacher's architecture; sampled with ``steps`` DDIM steps at guidance 1, marked
    ``guidance_folded`` (two-stage then runs it unguided on its own grid). No plane
    contrast: the teacher's is in its trajectories, folded in like its guidance."""
    return teacher.model_copy(update={"sampling": SamplingDefaults(
        steps=steps, sampler="ddim", guidance=1.0,
        guidance_by_appearance={a: 1.0 for a in teacher.appearances},
        guidance_folded=True)})


def train_student(teacher_dir: Path, traj: Trajectories, out: Path, steps: int,
                  batch: int = 16, lr: float = 5e-5, ema_decay: float = 0.999, seed: int = 0,
                  checkpoint_every: int = 200, log: Log = print,
                  deadline: float | None = None, holdout: Trajectories | None = None,
                  rollout: float = 0.0, init: Path | None = None,
                  substeps: int | None = None, teacher_segment: TeacherSegment | None = None
                  ) -> Path:
    """Train (resuming from ``out/checkpoint.pt``) and write the EMA student to
    ``out/final``; returns that folder. ``deadline`` (``time.monotonic()``) stops early
    with a checkpoint and the weights as they are. ``holdout``: trajectories on layouts
    never trained on, measured at every checkpoint (``x0_errors``, ``rollout_errors``)
    beside as many training ones, into ``out/log.jsonl``. ``rollout``: the fraction of
    rows past the first student step that start from the student's own state instead of the
    teacher's, with the x0 that lands where ``teacher_segment`` (the teacher in the loop)
    goes from there as target (``rollout.own_rows``).
    ``init``: start from these student weights (of this teacher and grid) instead of the
    teacher's. ``substeps``: teacher steps per student step, kept in the weights' metadata
    (``check_student`` compares it)."""
    k = len(traj.timesteps)
    check_rollout(rollout, k)
    if rollout > 0 and teacher_segment is None:
        raise ValueError("rollout: needs the teacher in the loop (teacher_segment)")
    teacher = FetalFlexDenoiser.load(teacher_dir)
    cfg = student_config(teacher.config, k)
    model = FetalFlexDenoiser(cfg)
    if init is not None:
        start_from, _ = check_student(init, traj.teacher, traj.timesteps,
                                      int(traj.states.shape[-1]), set(traj.appearances),
                                      flag="--init", substeps=substeps)
        model.load_state_dict(start_from.state_dict())
        del start_from
    else:
        model.load_state_dict(teacher.state_dict())
    del teacher
    ema = EMA(model, ema_decay)
    ac = alphas_cumprod_for(cfg)
    states = torch.from_numpy(traj.states)
    targets = x0_targets(states, traj.timesteps, ac).to(torch.float16)
    layouts = traj.label_maps
    cond_all = trajectory_conds(traj, torch.arange(len(traj.planes)), cfg)
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
    probe = model_probe(cfg, ema) if holdout is not None else None
    fit_idx = fit_indices(n, len(holdout.planes), seed) if holdout is not None else None

    measured: dict[int, dict[str, Any]] = {}

    def measure(step: int) -> dict[str, Any]:
        assert probe is not None and holdout is not None and fit_idx is not None
        if step in measured:
            return measured[step]
        probe.load_state_dict(ema.state_dict())
        row = {"step": step, **error_row(probe, traj, holdout, fit_idx)}
        append_log(out, row)
        log(f"student step {step}: x0 error per step, training {row['fit_x0_error']}, "
            f"held out {row['holdout_x0_error']}; free-running state error, held out "
            f"{row['holdout_rollout_error']}")
        measured[step] = row
        return row

    t0, losses = time.perf_counter(), []
    stopped = False
    first = done
    for step in range(done, steps):
        if deadline is not None and time.monotonic() >= deadline:
            stopped = True
            break
        if step == first:  # written only when a step is really trained
            append_log(out, {"step": step, "event": "start", "trajectories": n})
        i = torch.randint(0, n, (min(batch, n),), generator=gen)
        j = torch.randint(0, k, (len(i),), generator=gen)
        x = states[i, j][:, None].float()
        tgt = targets[i, j][:, None].float()
        t = t_all[j]
        lay = torch.from_numpy(np.stack([one_hot(layouts[int(q)]) for q in i]))
        if rollout > 0:
            own = ((torch.rand(len(i), generator=gen) < rollout) & (j > 0)).nonzero().flatten()
            if len(own):
                assert teacher_segment is not None
                x[own], tgt[own] = own_rows(model, teacher_segment, states[i[own]], j[own],
                                            traj.timesteps, lay[own], cond_all[i[own]],
                                            [traj.appearances[int(q)] for q in i[own]], ac,
                                            bf16)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            v = model(x, t, lay, cond_all[i], torch.ones(len(i)))
        x0 = predict_x0(cfg.prediction_type, ac, x, v.float(), t)
        loss = nn.functional.mse_loss(x0, tgt)
        if init is not None:  # a fresh optimizer on trained weights: no full-size first steps
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / INIT_WARMUP)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step + 1)
        losses.append(loss.item())
        done = step + 1
        if done % LOG_EVERY == 0 or done == steps:
            append_log(out, {"step": done, "loss": round(float(np.mean(losses)), 6),
                             "steps_per_s": round(len(losses) / max(
                                 time.perf_counter() - t0, 1e-9), 3)})
            t0, losses = time.perf_counter(), []
        if done % checkpoint_every == 0:
            _checkpoint(ckpt, model, ema, opt, gen, done)
            if probe is not None:
                measure(done)
    _checkpoint(ckpt, model, ema, opt, gen, done)
    meta: dict[str, Any] = {"distilled_from": traj.teacher, "student_steps": k,
                            "teacher_guidance": traj.guidance, "trajectories": n,
                            "train_steps": done, "timesteps": traj.timesteps}
    if substeps is not None:
        meta["substeps"] = substeps
    if rollout > 0:
        meta["rollout"] = rollout
    if init is not None:
        meta["initialised_from"] = str(init)
    if probe is not None and holdout is not None:
        last = measure(done)
        meta["holdout_trajectories"] = len(holdout.planes)
        meta["holdout_x0_error"] = last["holdout_x0_error"]
        meta["fit_x0_error"] = last["fit_x0_error"]
        meta["holdout_rollout_error"] = last["holdout_rollout_error"]
    if stopped:
        meta["stopped_at_deadline"] = True
    final = out / "final"
    model.save(final, state=ema.state_dict(), meta=meta)
    if (out / "log.jsonl").is_file():
        plot_distill(out / "log.jsonl", out / "distill.png", list(traj.timesteps))
    log(f"student: {done} steps; weights {final}")
    return final


def model_probe(cfg: DenoiserConfig, ema: EMA) -> FetalFlexDenoiser:
    """A second network that holds the EMA weights while they are measured."""
    probe = FetalFlexDenoiser(cfg)
    probe.load_state_dict(ema.state_dict())
    return probe


def _checkpoint(path: Path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer,
                gen: torch.Generator, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                "opt": opt.state_dict(), "gen": gen.get_state(), "step": step}, tmp)
    tmp.replace(path)
