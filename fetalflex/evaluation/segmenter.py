"""Reference segmenter: reads the anatomy back from an image (the evaluator's eyes).

A small U-Net (plain PyTorch) trained on phantom (image, label map) pairs with
cross-entropy + soft Dice. Its Dice on held-out phantoms is the ceiling of the
anatomy-adherence metric: generated images cannot be read back better than real ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from fetalflex.anatomy.structures import NUM_LABELS
from fetalflex.data.dataset import PhantomDataset


class SegmenterConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_labels: int = NUM_LABELS
    image_size: int = Field(default=128, ge=16)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
    )


class Segmenter(nn.Module):
    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.down = nn.ModuleList([_block(1 if i == 0 else ch[i - 1], c) for i, c in enumerate(ch)])
        self.up = nn.ModuleList([_block(ch[i] + ch[i - 1], ch[i - 1])
                                 for i in range(len(ch) - 1, 0, -1)])
        self.head = nn.Conv2d(ch[0], config.num_labels, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for blk, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = blk(torch.cat([x, skip], dim=1))
        return self.head(x)

    @torch.inference_mode()
    def predict(self, images: Tensor, batch: int = 64, plane: str | None = None) -> np.ndarray:
        """(N,1,H,W) in [-1, 1] -> (N,H,W) uint8 label ids.

        With ``plane`` the reading is restricted to that plane's labels (the plane of a
        request is known; the question is where its structures are, not which plane it is).
        """
        self.eval()
        allowed = None
        if plane is not None:
            from fetalflex.anatomy.planes import plane as get_plane

            allowed = torch.full((self.config.num_labels,), float("-inf"))
            allowed[list(get_plane(plane).label_ids)] = 0.0
        outs = []
        for i in range(0, len(images), batch):
            logits = self(images[i:i + batch])
            if allowed is not None:
                logits = logits + allowed.view(1, -1, 1, 1)
            outs.append(logits.argmax(1).to(torch.uint8))
        return torch.cat(outs).numpy()

    def save(self, directory: Path, meta: dict[str, object] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(self.config.model_dump_json(indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  str(directory / "model.safetensors"),
                  metadata={"fetalflex": json.dumps(meta or {})})

    @classmethod
    def load(cls, directory: Path) -> Segmenter:
        cfg = SegmenterConfig.model_validate_json((directory / "config.json").read_text())
        m = cls(cfg)
        m.load_state_dict(load_file(str(directory / "model.safetensors")))
        return m.eval()


def _soft_dice_loss(logits: Tensor, onehot: Tensor) -> Tensor:
    p = logits.softmax(1)
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    return 1 - dice[present].mean()


def train_segmenter(manifest: Path, out: Path, steps: int = 1500, batch_size: int = 32,
                    lr: float = 2e-3, seed: int = 0, threads: int | None = None,
                    progress: bool = True, channels: tuple[int, ...] | None = None,
                    augment_prob: float = 0.5) -> Path:
    """Train on every record of ``manifest``, abnormal phantoms included: the segmenter is
    the evaluator's instrument, never part of the generator, and it must read edited
    anatomy (larger ventricles, gaps) as well as normal anatomy. Images and label maps are
    warped together (``training.augment``) and the gain is jittered, since the generator's
    gain need not match the phantom's."""
    from fetalflex.training.augment import AugmentConfig, joint_augment

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ds = PhantomDataset(manifest, preload=True, include_abnormal=True)
    size = int(ds[0]["image"].shape[-1])
    cfg = SegmenterConfig(image_size=size) if channels is None else SegmenterConfig(
        image_size=size, channels=channels)
    model = Segmenter(cfg)
    aug = AugmentConfig(prob=augment_prob)
    loader = DataLoader(ds, batch_size=batch_size, drop_last=True,
                        sampler=RandomSampler(ds, generator=torch.Generator().manual_seed(seed)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    it = iter(loader)
    log = []
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc="segmenter", disable=not progress):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        x, onehot = joint_augment(b["image"], b["layout"], aug, gen)
        x = (x + 1) * torch.empty(len(x), 1, 1, 1).uniform_(0.75, 1.25, generator=gen) - 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x.clamp(-1, 1)).float()
        loss = nn.functional.cross_entropy(logits, onehot.argmax(1)) + _soft_dice_loss(
            logits, onehot)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 50 == 0:
            log.append({"step": step + 1, "loss": round(loss.item(), 5)})
    meta = {"steps": steps, "batch_size": batch_size, "data": str(manifest),
            "seconds": round(time.perf_counter() - t0, 1), "log": log[-5:],
            "augment_prob": augment_prob}
    model.save(out, meta)
    return out
