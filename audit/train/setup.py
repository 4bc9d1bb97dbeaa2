"""What `train` sets up around its loop: the device, the model(s), the optimiser, the resume state.

The loop itself (`audit.train.loop`) reads top to bottom; everything here runs once per run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from audit.config import TrainConfig
from audit.errors import ConfigError, FormatError
from audit.train.models import SmallMMRM

log = logging.getLogger(__name__)


def train_device(cfg: TrainConfig) -> torch.device:
    from audit.dist import local_device

    dev = cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise FormatError(f"`--device {cfg.device}`: no CUDA device is visible to torch here; pass `--device cpu`")
    return torch.device(local_device(dev))


def vlm_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Run a VLM backbone's forward in bf16 autocast (its weights and AdamW state stay fp32)?"""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def build_models(cfg: TrainConfig, device: torch.device):
    """(model, bias model or None, vision report): the multimodal RM and, for `shortcut-aware`, its
    text-only branch of the same shape. A Hugging Face VLM backbone (`--model PATH`) has its vision
    tower frozen unless `--train-vision`; the small model's scene encoder is pretrained or from scratch."""
    two = cfg.method == "shortcut-aware"
    if cfg.model != "small":
        from audit.train.vlm_rm import VLMTrainRM

        kw = dict(freeze_vision=not cfg.train_vision, seed=cfg.seed, bf16=vlm_bf16(cfg, device),
                  grad_checkpointing=cfg.grad_checkpointing)
        model = VLMTrainRM(cfg.model, device, **kw)
        bias = VLMTrainRM(cfg.model, device, **kw) if two else None
        return model, bias, None
    model = SmallMMRM(cfg.vocab, cfg.dim, cfg.image_size, cfg.vision)
    bias = SmallMMRM(cfg.vocab, cfg.dim, cfg.image_size, cfg.vision) if two else None
    vision_report = None
    if cfg.vision == "pretrained":                # both branches start from the same encoder
        from audit.train.vision import pretrained_encoder

        state, vision_report = pretrained_encoder(cfg.image_size, cfg.vision_scenes, cache=cfg.cache_dir)
        for m in (model, bias):
            if m is not None:
                m.vision.load_state_dict(state)
                m.vision.requires_grad_(cfg.train_vision)
    model.to(device)
    if bias is not None:
        bias.to(device)
    return model, bias, vision_report


def make_optimizer(cfg: TrainConfig, model, bias, device: torch.device):
    """AdamW over the trainable parameters of both branches (fused on a GPU: one kernel per step
    instead of several per tensor; the small model is launch-bound). Returns (optimiser, params)."""
    params = [p for m in (model, bias) if m is not None for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            **({"fused": True} if device.type == "cuda" else {}))
    return opt, params


def frozen_vision(cfg: TrainConfig, model) -> bool:
    """A frozen scene encoder gives every image the same features in every epoch: computed once."""
    return cfg.model == "small" and not any(p.requires_grad for p in model.vision.parameters())


def load_state(path: Path) -> dict:
    """The resume state, loaded without unpickling code (`weights_only=True`): tensors, numbers, lists
    and dicts only. A file that is not such a state is a clear error, never executed."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure to read it means the same thing to the user
        raise FormatError(f"`{path}` is not a resumable training state written by `train` ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); delete it to start the run afresh") from None


_HISTORY_KEYS = ("loss", "mean_weight", "train_acc", "ess", "seconds")


def _valid_progress(epoch, history) -> bool:
    """A state's `epoch` and `history` are what `save_state` writes: one finite entry per epoch run."""
    import math

    return (type(epoch) is int and epoch >= 0 and isinstance(history, list) and len(history) == epoch
            and all(isinstance(h, dict) and h.get("epoch") == i + 1
                    and all(isinstance(h.get(k), (int, float)) and math.isfinite(h[k]) for k in _HISTORY_KEYS)
                    for i, h in enumerate(history)))


def resume(state_file: Path, model, bias, opt, epochs: int) -> tuple[int, list]:
    """(first epoch to run, history so far): from `state_file` after a crash (same run, same result),
    else (0, [])."""
    if not state_file.is_file():
        return 0, []
    state = load_state(state_file)
    epoch, history = (state.get("epoch"), state.get("history")) if isinstance(state, dict) else (None, None)
    if not _valid_progress(epoch, history):
        raise FormatError(f"`{state_file}` does not say which epochs ran (epoch {str(epoch)[:20]!r}, a history of "
                          f"{type(history).__name__}); it is not a state `train` wrote: pass `--overwrite` to start "
                          "the run afresh, or use another `-o`")
    if epoch > epochs:
        raise ConfigError(f"`{state_file.parent}` holds this run trained for {epoch} epochs, more than `--epochs "
                          f"{epochs}`; pass `--overwrite` to train it afresh for {epochs}, or another `-o`")
    try:
        model.load_state_dict(state["model"])
        if bias is not None:
            bias.load_state_dict(state["bias"])
        opt.load_state_dict(state["opt"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise FormatError(f"`{state_file}` does not match this run's model or method ({type(e).__name__}); "
                          "delete it to start the run afresh, or use another `-o`") from None
    log.info("resuming %s at epoch %d", state_file.parent, epoch)
    return epoch, history


def save_state(state_file: Path, model, bias, opt, epoch: int, history: list) -> None:
    from audit.io import atomic_path

    with atomic_path(state_file) as tmp:
        torch.save({"model": model.state_dict(), "bias": None if bias is None else bias.state_dict(),
                    "opt": opt.state_dict(), "epoch": epoch, "history": history}, tmp)
