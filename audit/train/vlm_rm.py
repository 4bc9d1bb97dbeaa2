"""`train --model PATH`: a Hugging Face vision-language backbone (Qwen2-VL / Qwen2.5-VL, Llava) as the
reward model, with a scalar head read at the last non-pad token (`audit.vlm`, the same input building
and forward the `score --rm` audit uses, here with gradients). The vision tower is frozen by default
(as in the paper); the language model, the projector / merger and the head train.

A run saves the backbone with `save_pretrained` plus `reward_head.safetensors` under `RUN/model/`: a
folder `score --rm` loads as it is."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

VISION_TOWERS = ("visual", "vision_tower", "vision_model")   # Qwen2-VL, Llava, others


def vision_tower(body: nn.Module) -> nn.Module:
    for name in VISION_TOWERS:
        if isinstance(getattr(body, name, None), nn.Module):
            return getattr(body, name)
    raise ValueError(f"cannot find the vision tower of {type(body).__name__} (looked for {', '.join(VISION_TOWERS)})")


def _has_head(path: Path) -> bool:
    from audit.errors import ConfigError
    from audit.vlm import _find_head

    try:
        _find_head(path)
        return True
    except ConfigError:       # no head tensor in the folder: a bare backbone
        return False


class VLMTrainRM(nn.Module):
    """The backbone and its head as one trainable module; `pair_rewards` scores chosen and rejected of
    a batch in one forward pass (the image is processed once and fed twice)."""

    def __init__(self, path: str | Path, device: str = "cpu", max_length: int = 2048, freeze_vision: bool = True,
                 seed: int = 0, bf16: bool = False, grad_checkpointing: bool = False) -> None:
        super().__init__()
        from transformers import AutoConfig

        from audit.vlm import VLMRewardModel

        path = Path(path)
        head = None
        if not _has_head(path):   # a bare backbone: a fresh head, N(0, 1 / (H + 1)) as TRL initialises it
            hidden = AutoConfig.from_pretrained(path).get_text_config().hidden_size
            g = torch.Generator().manual_seed(seed)
            head = {"weight": torch.randn(1, hidden, generator=g) / math.sqrt(hidden + 1), "bias": torch.zeros(1)}
        # fp32 master weights always: AdamW updates of bf16 weights are rounded away (an update below
        # 2^-8 of a weight is lost); `bf16` runs the forward under autocast instead.
        self.vlm = VLMRewardModel(path, device=device, max_length=max_length, head=head, keep_full=True,
                                  dtype=torch.float32, autocast_bf16=bf16)
        self.body, self.head = self.vlm.body, self.vlm.head
        self.config = {"kind": "hf", "base": str(path), "max_length": max_length, "freeze_vision": freeze_vision}
        if freeze_vision:
            vision_tower(self.body).requires_grad_(False)
        if grad_checkpointing:    # transformers 5 renamed it; 4.x has only the old name
            kwargs = {"use_reentrant": False}
            if hasattr(self.body, "activation_checkpointing_enable"):
                self.body.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.body.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def pair_rewards(self, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str],
                     images: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        vlm = self.vlm
        processed = vlm.process_images(images)
        ids = [vlm.encode(p, r, processed, i) for i, (p, r) in enumerate(zip(prompts, chosen))]
        ids += [vlm.encode(p, r, processed, i) for i, (p, r) in enumerate(zip(prompts, rejected))]
        twice = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in processed.items()}
        out = vlm.forward(vlm.collate(ids, twice))
        return out[:len(prompts)], out[len(prompts):]

    def save(self, folder: Path) -> None:
        from audit.vlm import save_head

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.vlm.full.save_pretrained(folder)
        self.vlm.tokenizer.save_pretrained(folder)
        self.vlm.image_processor.save_pretrained(folder)
        save_head(folder, self.head.weight, self.head.bias)


def to_pil(images: torch.Tensor) -> list:
    """(B, 3, S, S) uint8 -> PIL images."""
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(im.numpy().transpose(1, 2, 0))) for im in images]
