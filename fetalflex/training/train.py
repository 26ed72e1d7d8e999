"""``fetalflex train``: the three-stage FetalFlex training recipe.

1. **base**: the UNet learns the image prior of each plane (plane/GA in the time
   embedding, no anatomy).
2. **prealign** (the pre-alignment module, switchable): the anatomy encoder alone learns
   to map a layout to the features that the frozen UNet's input convolution computes from
   the clean image of that layout, ``min || E(layout) - conv_in(x0) ||^2``.
3. **control**: the ControlNet branch (encoder copied from the trained UNet, anatomy
   encoder from stage 2 or fresh) learns with the diffusion loss; classifier-free
   guidance dropout of layout and plane; layouts as label maps or boxes.

AdamW, linear warm-up then cosine decay per stage, EMA weights, bf16 autocast on CUDA,
checkpoints and resume, JSONL log and a loss plot. Under ``torchrun`` it runs
DistributedDataParallel (one process per GPU) with no code change.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    WeightedRandomSampler,
)
from tqdm import tqdm

from fetalflex.appearance import APPEARANCES
from fetalflex.data.dataset import PhantomDataset
from fetalflex.model.denoiser import FetalFlexDenoiser, condition_vector, drop_condition
from fetalflex.model.diffusion import add_noise, alphas_cumprod_for, loss_weight, target
from fetalflex.model.hardware import autocast_bf16
from fetalflex.training import clock
from fetalflex.training.augment import joint_augment
from fetalflex.training.balance import cell_shares, record_weights
from fetalflex.training.batches import ResidentBatches
from fetalflex.training.config import StageConfig, TrainConfig
from fetalflex.training.ema import EMA
from fetalflex.training.init_weights import load_initial

STAGES = ("base", "prealign", "control")


def _lr_lambda(stage: StageConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < stage.warmup_steps:
            return (step + 1) / max(stage.warmup_steps, 1)
        progress = (step - stage.warmup_steps) / max(stage.steps - stage.warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


class Dist:
    def __init__(self) -> None:
        self.enabled = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        self.rank = dist.get_rank() if self.enabled else 0
        self.world = dist.get_world_size() if self.enabled else 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def train_device(cfg: TrainConfig, d: Dist) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", d.local_rank)


def _batches(loader: DataLoader, sampler: object) -> Iterator[dict[str, Tensor]]:
    epoch = 0
    while True:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _params(model: FetalFlexDenoiser, stage: str, cfg: TrainConfig) -> list[nn.Parameter]:
    if stage == "base":
        return list(model.unet.parameters())
    if stage == "prealign":
        return list(model.anatomy_encoder.parameters())
    params = list(model.control.parameters())
    if cfg.train_base_in_control:
        params += list(model.unet.parameters())
    return params


def stage_params(model: FetalFlexDenoiser, stage: str, cfg: TrainConfig) -> list[nn.Parameter]:
    """The parameters a stage trains, with gradients switched on for them alone."""
    model.requires_grad_(False)
    params = _params(model, stage, cfg)
    for p in params:
        p.requires_grad_(True)
    return params


_CONDITION_READERS = ("class_embedding.", "controlnet_cond_embedding.conv_in.")


def param_groups(model: FetalFlexDenoiser, params: list[nn.Parameter], lr: float,
                 cfg: TrainConfig) -> list[dict[str, Any]]:
    """One group at ``lr``, or two when ``condition_lr_scale`` != 1: the tensors that read
    the condition vector at ``lr * condition_lr_scale``, the rest at ``lr``."""
    if cfg.condition_lr_scale == 1.0:
        return [{"params": params, "lr": lr}]
    fast_ids = {id(p) for n, p in model.named_parameters()
                if any(k in n for k in _CONDITION_READERS)}
    fast = [p for p in params if id(p) in fast_ids]
    rest = [p for p in params if id(p) not in fast_ids]
    return [{"params": rest, "lr": lr},
            {"params": fast, "lr": lr * cfg.condition_lr_scale}]


def optimizer_step(net: nn.Module, batch: dict[str, Tensor], gen: torch.Generator,
                   opt: torch.optim.Optimizer, params: list[nn.Parameter], cfg: TrainConfig,
                   dev: torch.device) -> Tensor:
    """One step of a stage (training and the budget's step-rate probe): the batch to the
    device, the loss under autocast, backward, gradient clipping, the optimizer; the loss."""
    batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
    with torch.autocast(dev.type, dtype=torch.bfloat16,
                        enabled=autocast_bf16(cfg.precision, dev)):
        loss: Tensor = net(batch, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    return loss


def _stage_loss(model: FetalFlexDenoiser, stage: str, batch: dict[str, Tensor],
                cfg: TrainConfig, ac: Tensor, gen: torch.Generator) -> Tensor:
    x0, layout = joint_augment(batch["image"], batch["layout"], cfg.augment, gen)
    n = x0.shape[0]
    dev = x0.device
    if cfg.partial_anatomy_prob > 0:
        layout = partial_layouts(layout, cfg.partial_anatomy_prob, cfg.partial_keep, gen)
    cond = condition_vector(batch["plane"], batch["ga"], cfg.model.num_planes,
                            model_appearances(batch, cfg), len(cfg.model.appearances))
    if stage == "prealign":
        with torch.no_grad():
            tgt = model.image_features(x0)
        return nn.functional.mse_loss(model.anatomy_encoder(model.anatomy_input(layout, cond)),
                                      tgt)
    t = torch.randint(0, cfg.model.num_train_timesteps, (n,), generator=gen).to(dev)
    # The noise is drawn where it is used: on a GPU, one core drawing 4 M normals a step
    # (batch 256 at 128^2) would take longer than the step (the CUDA stream is seeded by
    # torch.manual_seed in train; the CPU stream by ``gen``, checkpointed for resume).
    eps = torch.randn(x0.shape, generator=gen if dev.type == "cpu" else None, device=dev)
    x_t = add_noise(ac, x0, eps, t)
    tgt = target(cfg.model.prediction_type, ac, x0, eps, t)
    drop = (torch.rand(n, generator=gen) < cfg.drop_condition_prob).to(dev)
    layout, cond, scale = drop_condition(layout, cond, torch.ones(n, device=dev), drop,
                                         cfg.model.num_planes)
    if stage == "base":
        pred = model.forward_base(x_t, t, cond)
    else:
        pred = model(x_t, t, layout, cond, scale)
    per_sample = (pred.float() - tgt.float()).pow(2).mean(dim=(1, 2, 3))
    if cfg.loss_weighting != "uniform":
        per_sample = per_sample * loss_weight(
            cfg.model.prediction_type, ac, t, cfg.min_snr_gamma,
            plus_one=cfg.loss_weighting == "min_snr_plus_one")
    return per_sample.mean()


def partial_layouts(layout: Tensor, prob: float, keep: tuple[float, float],
                    gen: torch.Generator) -> Tensor:
    """Make a share ``prob`` of the layouts partial: each sample draws a keep probability
    uniformly from ``keep``, each structure channel is kept with it, the others' pixels are
    set to "not labelled" (all-zero channels)."""
    n, k = layout.shape[:2]
    chosen = torch.rand(n, 1, generator=gen) < prob
    p = keep[0] + (keep[1] - keep[0]) * torch.rand(n, 1, generator=gen)
    kept = torch.rand(n, k, generator=gen) < p
    mask = torch.where(chosen, kept, torch.ones_like(kept)).to(layout.device, layout.dtype)
    return layout * mask[:, :, None, None]


def model_appearances(batch: dict[str, Tensor], cfg: TrainConfig) -> Tensor | None:
    """Each sample's appearance as an index into the model's appearances (None for a model
    without them, which must then see phantoms only)."""
    served = cfg.model.appearances
    if "appearance" not in batch:  # a batch built without appearances: phantoms
        if served:
            raise ValueError("batch: this model's condition needs each sample's appearance")
        return None
    names = [APPEARANCES[int(i)] for i in batch["appearance"].tolist()]
    if not served:
        if any(a != "phantom" for a in names):
            raise ValueError("model.appearances: the data has real-appearance records but "
                             "the model has no appearance condition; set model.appearances "
                             "to [\"phantom\", \"real\"]")
        return None
    missing = sorted(set(names) - set(served))
    if missing:
        raise ValueError(f"model.appearances: the data has {missing} records; add them")
    return torch.tensor([served.index(a) for a in names], dtype=torch.long,
                        device=batch["plane"].device)


class StageLoss(nn.Module):
    ac: Tensor  # a buffer
    """One stage's loss as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: FetalFlexDenoiser, stage: str, cfg: TrainConfig,
                 ac: Tensor) -> None:
        super().__init__()
        self.model, self.stage, self.cfg = model, stage, cfg
        self.register_buffer("ac", ac, persistent=False)

    def forward(self, batch: dict[str, Tensor], gen: torch.Generator) -> Tensor:
        return _stage_loss(self.model, self.stage, batch, self.cfg, self.ac, gen)


_LOSS_NAMES = {"base": "diffusion loss", "prealign": "feature MSE",
               "control": "diffusion loss"}


def data_description(ds: PhantomDataset) -> str:
    """What the training set holds, for the loss plot's title: 'phantom data', 'real scans'
    or both with their counts."""
    real = sum(r.appearance == "real" for r in ds.records)
    phantom = len(ds.records) - real
    if not real:
        return f"{phantom} phantoms"
    if not phantom:
        return f"{real} real scans"
    return f"{real} real scans + {phantom} phantoms"


def _plot(log_path: Path, out: Path, batch_size: int, data: str = "phantom data",
          weighting: str = "uniform") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fetalflex.reports.figures import save_figure

    rows = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    fig, ax = plt.subplots(figsize=(8, 4))
    by_stage = {st: [x for x in rows if x["stage"] == st] for st in STAGES}
    # A stage of one logged point (a fine-tune's 1-step base stage) is no curve: left out
    # unless nothing else was logged.
    curves = {st: r for st, r in by_stage.items() if len(r) > 1} or by_stage
    for st, r in curves.items():
        if r:
            ax.plot([x["global_step"] for x in r], [x["loss"] for x in r],
                    label=f"{st}: {_LOSS_NAMES[st]}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step (all stages)")
    ax.set_ylabel(f"loss of one batch ({weighting.replace('_', ' ')} weights, log)")
    ax.legend()
    title = f"FetalFlex training loss ({data}, batch {batch_size})"
    ax.set_title(title)
    save_figure(fig, out, title)


def load_dataset(cfg: TrainConfig, manifest: Path) -> PhantomDataset:
    """The training set as ``cfg`` reads it (held in memory when ``cfg.preload``)."""
    return PhantomDataset(manifest, box_prob=cfg.box_prob, preload=cfg.preload, seed=cfg.seed)


def data_batches(cfg: TrainConfig, manifest: Path, d: Dist, dev: torch.device,
                 dataset: PhantomDataset | None = None
                 ) -> tuple[PhantomDataset, Iterator[dict[str, Tensor]]]:
    """Batches of ``dataset`` (loaded from ``manifest`` when not given)."""
    ds = dataset if dataset is not None else load_dataset(cfg, manifest)
    size = ds[0]["image"].shape[-1]
    if size != cfg.model.image_size:
        raise ValueError(f"model.image_size: {cfg.model.image_size} but the data set's images "
                         f"are {size}x{size}")
    weights = record_weights(ds.records, cfg.plane_balance)
    if cfg.batching == "resident":
        return ds, iter(ResidentBatches(ds, cfg.batch_size, dev, seed=cfg.seed, rank=d.rank,
                                        world=d.world, weights=weights))
    if weights is not None and d.enabled:
        raise ValueError("plane_balance: with several processes use batching 'resident'")
    sampler: Sampler[int]
    if weights is not None:
        sampler = WeightedRandomSampler(weights.tolist(), len(ds), replacement=True,
                                        generator=torch.Generator().manual_seed(cfg.seed))
    elif d.enabled:
        sampler = DistributedSampler(ds, seed=cfg.seed)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed))
    loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers)
    return ds, _batches(loader, sampler)


def train(cfg: TrainConfig, manifest: Path, out: Path, stages: tuple[str, ...] = STAGES,
          resume: bool = True, progress: bool = True, deadline: float | None = None,
          dataset: PhantomDataset | None = None) -> Path:
    """Run the recipe; returns the directory of the final EMA weights (``out/final``).

    ``deadline`` (a ``training.clock.now()`` value) stops training there, whatever stage it is
    in, with a checkpoint and the final EMA weights written as usual; the weights' metadata
    then says ``"stopped_at_deadline": true`` and the steps done (a resumed run goes on).
    ``dataset``: the set already loaded (``load_dataset``), e.g. by the budget probe."""
    d = Dist()
    dev = train_device(cfg, d)
    torch.manual_seed(cfg.seed + d.rank)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + d.rank)
    out.mkdir(parents=True, exist_ok=True)
    if d.main:
        cfg.save(out / "train_config.json")
    ds, it = data_batches(cfg, manifest, d, dev, dataset)
    model = FetalFlexDenoiser(cfg.model)
    if cfg.init_weights is not None:
        load_initial(model, Path(cfg.init_weights))
    model = model.to(dev)
    ema = EMA(model, cfg.ema_decay)
    ac = alphas_cumprod_for(cfg.model).to(dev)
    log_path = out / "log.jsonl"
    ckpt_path = out / "checkpoint.pt"
    done: dict[str, int] = {}
    ck: dict[str, Any] = {}
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        done = ck["done"]
        gen.set_state(ck["gen"])
    global_step = sum(done.values())
    stopped = False
    for stage in stages:
        if stopped:
            break
        sc: StageConfig = getattr(cfg, stage)
        if stage == "prealign" and not cfg.pre_alignment:
            continue
        start = done.get(stage, 0)
        if start >= sc.steps:
            continue
        if stage == "control" and start == 0 and cfg.init_weights is None:
            model.copy_unet_encoder_to_control()  # the ControlNet copies the trained UNet
        if start == 0:
            ema.resync(model)  # a stage's EMA starts from the weights it starts from
        params = stage_params(model, stage, cfg)
        net: nn.Module = StageLoss(model, stage, cfg, ac)
        if d.enabled:  # gradients sync through the wrapper's forward
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=True)
        opt = torch.optim.AdamW(param_groups(model, params, sc.lr, cfg), lr=sc.lr,
                                weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sc))
        if start and ck.get("stage") == stage:  # resume inside a stage: optimizer too
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
        bar = tqdm(total=sc.steps, initial=start, desc=stage, disable=not (progress and d.main),
                   dynamic_ncols=True)
        t_last, n_last = time.perf_counter(), start
        for step in range(start, sc.steps):
            if deadline is not None and clock.now() >= deadline:
                stopped = True
                if d.main and step > start:
                    _checkpoint(ckpt_path, model, ema, done, gen, stage, opt, sched)
                break
            loss = optimizer_step(net, next(it), gen, opt, params, cfg, dev)
            sched.step()
            global_step += 1
            ema.update(model, global_step)
            done[stage] = step + 1
            if d.main:
                bar.update(1)
                if (step + 1) % cfg.log_every == 0 or step + 1 == sc.steps:
                    now = time.perf_counter()
                    sps = (step + 1 - n_last) / max(now - t_last, 1e-9)
                    t_last, n_last = now, step + 1
                    bar.set_postfix(loss=f"{loss.item():.4f}", steps_s=f"{sps:.2f}")
                    with log_path.open("a") as f:
                        f.write(json.dumps({"stage": stage, "step": step + 1,
                                            "global_step": global_step,
                                            "loss": round(loss.item(), 6),
                                            "lr": sched.get_last_lr()[0],
                                            "steps_per_s": round(sps, 3)}) + "\n")
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == sc.steps:
                    _checkpoint(ckpt_path, model, ema, done, gen, stage, opt, sched)
                if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
                    model.save(out / "snapshots" / f"{stage}-{step + 1:06d}",
                               state=ema.state_dict(), meta={"steps": dict(done)})
        bar.close()
    if d.main:
        final = out / "final"
        meta: dict[str, Any] = {"steps": done, "pre_alignment": cfg.pre_alignment,
                                "data": str(manifest), "data_description": data_description(ds),
                                "batch_shares": cell_shares(
                                    ds.records, record_weights(ds.records, cfg.plane_balance))}
        if cfg.init_weights is not None:
            meta["init_weights"] = cfg.init_weights
        if stopped:
            meta["stopped_at_deadline"] = True
        model.save(final, state=ema.state_dict(), meta=meta)
        if log_path.exists():
            _plot(log_path, out / "loss.png", cfg.batch_size, data_description(ds),
                  cfg.loss_weighting)
    if d.enabled:
        dist.barrier()
    return out / "final"


def _checkpoint(path: Path, model: nn.Module, ema: EMA, done: dict[str, int],
                gen: torch.Generator, stage: str, opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "done": dict(done),
                "gen": gen.get_state(), "stage": stage, "opt": opt.state_dict(),
                "sched": sched.state_dict()}, tmp)
    tmp.replace(path)
