"""Reward models for `train`: a small multimodal RM that trains on CPU in minutes (for the synthetic
environments, tests and the demo). Words are hashed into a fixed vocabulary (no tokenizer download).

The image goes through a small CNN whose map is max-pooled per quadrant into four object slots (each
quadrant of a synthetic scene holds at most one object). The reward reads the image in two hops, the
way the questions are asked: the prompt attends over the slots to pick the object it names ("the red
circle"), then the response is compared with that object ("... is in the top left corner"); a sum over
the slots serves counting. The response is matched word by word (max over words), so a longer answer
does not dilute it; the mean of its words also goes to the head, which is where text-only style (a
lead-in, a closing line) can be picked up. A plain global image vector with an [image, text,
image * response] head cannot bind the named object to its attribute and stays near chance on these
tasks (measured: about 53% on the cue-free environment at 600 pairs).

The vision side (`SceneEncoder`) is either trained from scratch with the reward, or pretrained on
synthetic scenes to name each quadrant's shape and colour and then frozen (`audit.train.vision`): the
stand-in for a VLM's pretrained, frozen vision tower."""

from __future__ import annotations

import re
import zlib

import torch
from torch import nn

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
SLOTS = 4          # 2 x 2 quadrants
VISION_DIM = 64    # channels of the scene encoder's map


def hash_tokens(text: str, vocab: int, max_len: int) -> list[int]:
    """Stable word-hash ids in [1, vocab); 0 is padding."""
    ids = [1 + zlib.crc32(w.lower().encode("utf-8", "surrogatepass")) % (vocab - 1) for w in _WORD.findall(text or "")]
    ids = ids[:max_len]
    return ids + [0] * (max_len - len(ids))


class SceneEncoder(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 4, 64): a 3-layer stride-2 CNN, max-pooled per quadrant."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, VISION_DIM, 3, 2, 1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveMaxPool2d(2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.pool(self.cnn(image * 2 - 1)).flatten(2).transpose(1, 2)


class SmallMMRM(nn.Module):
    """r(image, prompt, response) from hashed words and four image slots (see the module doc)."""

    def __init__(self, vocab: int = 4096, dim: int = 64, image_size: int = 64, vision: str = "scratch") -> None:
        super().__init__()
        self.config = {"kind": "small", "vocab": vocab, "dim": dim, "image_size": image_size, "vision": vision}
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.vision = SceneEncoder()
        # each slot's features plus a one-hot of its quadrant, so "where" can be read as well as "what"
        self.slot = nn.Sequential(nn.Linear(VISION_DIM + SLOTS, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.query = nn.Linear(dim, dim)      # prompt -> which object
        self.compare = nn.Linear(dim, dim)    # response words -> what they say about that object
        self.head = nn.Sequential(nn.Linear(1 + 4 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, 4, dim) slots; computed once per pair, shared by both responses."""
        return self.slots(self.vision(image))

    def slots(self, f: torch.Tensor) -> torch.Tensor:
        """Scene-encoder features (B, 4, 64) -> (B, 4, dim) slots. With a frozen encoder the features
        of a dataset are computed once (`audit.train.loop.vision_features`) and only this part runs per step."""
        where = torch.eye(SLOTS, dtype=f.dtype, device=f.device).expand(f.shape[0], -1, -1)
        return self.slot(torch.cat([f, where], dim=-1))

    def _mean(self, ids: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
        keep = (ids != 0).unsqueeze(-1).to(vecs.dtype)
        return (vecs * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def score(self, slots: torch.Tensor, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
        p = self._mean(prompt_ids, self.emb(prompt_ids))                     # (B, dim)
        words = self.emb(response_ids)                                       # (B, T, dim)
        r = self._mean(response_ids, words)
        pad = (response_ids == 0).unsqueeze(-1)
        att = torch.softmax(torch.einsum("bkd,bd->bk", slots, self.query(p)) / slots.shape[-1] ** 0.5, dim=1)
        obj = torch.einsum("bk,bkd->bd", att, slots)                         # the object the prompt names

        def best(x: torch.Tensor) -> torch.Tensor:
            # the strongest word per feature (an empty response gives 0)
            return x.masked_fill(pad, float("-inf")).amax(1).clamp(min=-1e4).masked_fill(pad.all(1), 0.0)

        said = best(obj.unsqueeze(1) * self.compare(words))                  # does the response agree with it
        counted = best(slots.sum(1).unsqueeze(1) * words)                    # all objects: counting
        feats = torch.cat([said.sum(-1, keepdim=True), said, counted, p, r], dim=-1)
        return self.head(feats).squeeze(-1)

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
    return SmallMMRM(config["vocab"], config["dim"], config["image_size"], config.get("vision", "scratch"))
