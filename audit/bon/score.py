"""Per-response rewards of the `small` reward model, many responses per picture: the scene encoder runs
once per image (or once for the blank one), the prompt and response sides once per response.

The values equal `audit.train.loop.rewards` on the same inputs (the model's `encode_image` is
`slots(vision(image))`); only the sharing of the image work differs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

MAX_LEN = 48          # the response length the small model trains and evaluates with (`load_pairs`)


def image_array(data: bytes, size: int) -> np.ndarray:
    """(3, size, size) uint8, as `audit.train.data.load_pairs` decodes a pair's picture."""
    from PIL import Image

    im = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))


def token_ids(texts: list[str], vocab: int) -> torch.Tensor:
    from audit.train.models import hash_tokens

    return torch.tensor([hash_tokens(t, vocab, MAX_LEN) for t in texts], dtype=torch.long).reshape(-1, MAX_LEN)


@torch.no_grad()
def small_rewards(model, images: torch.Tensor, prompt_ids: torch.Tensor, response_ids: torch.Tensor,
                  owner: np.ndarray, blank: bool = False, batch: int = 1024) -> np.ndarray:
    """Rewards (N,) of responses `response_ids` (N, T), response i answering prompt `owner[i]` about
    image `owner[i]` of `images` (G, 3, S, S) uint8; `blank`: every picture replaced by the white one."""
    from audit.train.loop import model_device
    from audit.train.models import blank_image

    model.eval()
    dev = model_device(model)
    if blank:
        feats = model.vision(blank_image(1, images.shape[-1]).to(dev)).expand(len(images), -1, -1)
    else:
        feats = torch.cat([model.vision(images[s:s + 512].float().to(dev) / 255.0) for s in range(0, len(images), 512)]
                          ) if len(images) else torch.zeros(0, 4, 64, device=dev)
    slots = model.slots(feats)                                              # (G, 4, dim), once per picture
    owner_t = torch.as_tensor(np.asarray(owner), dtype=torch.long)
    out = np.zeros(len(response_ids), dtype=np.float64)
    for s in range(0, len(response_ids), batch):
        idx = owner_t[s:s + batch]
        r = model.score(slots[idx.to(dev)], prompt_ids[idx].to(dev), response_ids[s:s + batch].to(dev))
        out[s:s + batch] = r.double().cpu().numpy()
    return out


def small_model_of(scorer):
    """The `small` torch model behind a loaded reward model (`load_reward_model`), or None for a VLM."""
    from audit.probes.reward_model import SmallRunRM

    return scorer.model if isinstance(scorer, SmallRunRM) else None


def read_image(path: Path) -> bytes:
    return Path(path).read_bytes()
