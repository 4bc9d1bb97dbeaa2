"""A pretrained vision side for the small reward model: the `SceneEncoder` trained to name, for each
quadrant of a synthetic scene, whether it holds an object, its shape and its colour. Real VLM reward
models start from a pretrained vision tower and (as in the paper) keep it frozen; this is the same
set-up at CPU scale. The scenes come from their own seed stream, never from a training or test set.

Deterministic for a given (image size, scenes, epochs, seed) and cached as safetensors, so `bench`
pretrains once and every run loads the same encoder."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audit.train.models import SLOTS, VISION_DIM, SceneEncoder

log = logging.getLogger(__name__)

_SCENE_STREAM = 7_777   # seed-stream key: pretraining scenes never coincide with an environment's scenes


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shortcut-audit"


def scenes(n: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n scenes as uint8 images and per-quadrant labels (present, shape, colour; -100 where empty)."""
    from audit.synth.scenes import COLOR_NAMES, SHAPES, draw_scene, make_scene

    x = np.zeros((n, 3, image_size, image_size), np.uint8)
    y = np.full((n, SLOTS, 3), -100, np.int64)
    y[..., 0] = 0
    for i in range(n):
        sc = make_scene(np.random.default_rng([seed, _SCENE_STREAM, i]))
        x[i] = np.asarray(draw_scene(sc, image_size)).transpose(2, 0, 1)
        for o in sc.objects:
            y[i, o.quadrant] = (1, SHAPES.index(o.shape), COLOR_NAMES.index(o.color))
    return torch.from_numpy(x), torch.from_numpy(y)


def _logits(enc: SceneEncoder, heads: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return heads(enc(x.float() / 255.0))            # (B, 4, 2 + 4 + 6)


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> dict:
    has = y[..., 0] == 1
    return {"present": float((out[..., :2].argmax(-1) == y[..., 0]).float().mean()),
            "shape": float((out[..., 2:6].argmax(-1)[has] == y[..., 1][has]).float().mean()),
            "colour": float((out[..., 6:].argmax(-1)[has] == y[..., 2][has]).float().mean())}


def pretrain(image_size: int, n_scenes: int = 6000, epochs: int = 5, seed: int = 0, batch: int = 128,
             lr: float = 3e-3) -> tuple[dict, dict]:
    """Train the scene encoder; returns (state_dict, report with held-out attribute accuracies)."""
    t0 = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc, heads = SceneEncoder(), nn.Linear(VISION_DIM, 2 + 4 + 6)
        x, y = scenes(n_scenes, image_size, seed)
        xt, yt = scenes(1000, image_size, seed + 1_000_000)
        opt = torch.optim.AdamW([*enc.parameters(), *heads.parameters()], lr=lr)
        ce = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(n_scenes, generator=g)
            for s in range(0, n_scenes, batch):
                i = perm[s:s + batch]
                out, t = _logits(enc, heads, x[i]), y[i]
                loss = (ce(out[..., :2].reshape(-1, 2), t[..., 0].reshape(-1))
                        + ce(out[..., 2:6].reshape(-1, 4), t[..., 1].reshape(-1))
                        + ce(out[..., 6:].reshape(-1, 6), t[..., 2].reshape(-1)))
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            report = _accuracy(_logits(enc, heads, xt), yt)
    report.update(image_size=image_size, scenes=n_scenes, epochs=epochs, seed=seed,
                  seconds=round(time.perf_counter() - t0, 2))
    return enc.state_dict(), report


def pretrained_encoder(image_size: int, n_scenes: int = 6000, epochs: int = 5, seed: int = 0,
                       cache: Path | None = None) -> tuple[dict, dict]:
    """The cached encoder for these settings, pretraining it the first time (rank 0 only under torchrun;
    the other ranks wait and load it)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from audit.dist import barrier
    from audit.io import atomic_path

    cache = Path(cache or default_cache())
    path = cache / f"scene-encoder-s{image_size}-n{n_scenes}-e{epochs}-seed{seed}.safetensors"
    rank = int(os.environ.get("RANK", 0))
    if not path.is_file() and rank == 0:
        log.info("pretraining the scene encoder (%d scenes, %d epochs) into %s", n_scenes, epochs, path)
        state, report = pretrain(image_size, n_scenes, epochs, seed)
        log.info("scene encoder: held-out accuracy %s", {k: report[k] for k in ("present", "shape", "colour")})
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"report": json.dumps(report)})
    barrier()
    with safe_open(str(path), framework="pt") as f:
        report = json.loads(f.metadata()["report"])
    return load_file(str(path)), report
