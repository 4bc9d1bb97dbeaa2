"""Reward models for `train`: a small multimodal RM that trains from scratch on CPU in minutes (for the
synthetic environments, tests and the demo). Words are hashed into a fixed vocabulary (no tokenizer
download); images go through a small CNN that keeps the spatial layout."""

from __future__ import annotations

import re
import zlib

import torch
from torch import nn

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def hash_tokens(text: str, vocab: int, max_len: int) -> list[int]:
    """Stable word-hash ids in [1, vocab); 0 is padding."""
    ids = [1 + zlib.crc32(w.lower().encode("utf-8", "surrogatepass")) % (vocab - 1) for w in _WORD.findall(text or "")]
    ids = ids[:max_len]
    return ids + [0] * (max_len - len(ids))


class SmallMMRM(nn.Module):
    """r(image, prompt, response): bags of hashed words for prompt and response, a 3-layer CNN for the
    image, and a head over [image, prompt, response, image * response] (the product lets the reward
    check whether the response agrees with the image)."""

    def __init__(self, vocab: int = 4096, dim: int = 64, image_size: int = 64) -> None:
        super().__init__()
        self.config = {"kind": "small", "vocab": vocab, "dim": dim, "image_size": image_size}
        self.emb = nn.EmbeddingBag(vocab, dim, mode="mean", padding_idx=0)
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(),
        )
        side = image_size // 8
        self.img = nn.Linear(32 * side * side, dim)
        self.head = nn.Sequential(nn.Linear(4 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        # image (B, 3, S, S) in [0, 1] -> (B, dim); computed once per pair, shared by both responses
        return self.img(self.cnn(image * 2 - 1).flatten(1))

    def score(self, v: torch.Tensor, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
        p = self.emb(prompt_ids)
        r = self.emb(response_ids)
        return self.head(torch.cat([v, p, r, v * r], dim=-1)).squeeze(-1)

    def forward(self, image: torch.Tensor, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
        # image (B, 3, S, S) in [0, 1]; ids (B, T) -> reward (B,)
        return self.score(self.encode_image(image), prompt_ids, response_ids)


def blank_image(batch: int, size: int) -> torch.Tensor:
    """The text-only branch's input: a white picture (the reference code's 224x224 white image,
    resized to our side), so the branch sees the same image slot with no content."""
    return torch.ones(batch, 3, size, size)


def build_model(config: dict) -> SmallMMRM:
    if config.get("kind", "small") != "small":
        raise ValueError(f"unknown model kind {config.get('kind')!r}")
    return SmallMMRM(config["vocab"], config["dim"], config["image_size"])
