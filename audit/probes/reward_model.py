"""Audit an existing multimodal reward model: score every pair twice, with its image and with the
blank white 224x224 picture the paper's reference code feeds its text-only branch.

A model that looks at the image changes its preference on some pairs when the image goes blank; a
model that leans on text cues keeps it. Per pair: `rm_margin` (with the image), `rm_blank_margin`
(blank image), `rm_flip` (the preferred response changes). Rewards are cached on disk by content
(model fingerprint, image, prompt, response), so a resumed or repeated run computes nothing twice,
and under `torchrun` each rank scores its own chunks of the cache.

Throughput: items are sorted by token count and cut into token-budget batches
(`audit.batching`); images are decoded, processed and tokenised in DataLoader workers while the
GPU runs the previous batch; a batch that runs out of GPU memory is split and retried.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from audit.batching import is_oom, run_batches, token_budget_batches
from audit.encoders.cache import content_key

log = logging.getLogger(__name__)

BLANK = ""   # image reference of the reference blank image (white 224x224)
BLANK_AT = "blank:"   # "blank:WxH": a white image of the pair's own size (`--rm-blank match`)


def blank_size(ref: str) -> tuple[int, int] | None:
    """The size of the blank image an item reference names, or None for a real image."""
    if ref == BLANK:
        return (224, 224)
    if ref.startswith(BLANK_AT):
        w, h = ref[len(BLANK_AT):].split("x")
        return int(w), int(h)
    return None


def item_image(ref: str, open_path: Callable[[str], object]):
    """The PIL image of an item: a white blank, or `open_path(ref)` for a real image."""
    size = blank_size(ref)
    if size is None:
        return open_path(ref)
    from PIL import Image

    return Image.new("RGB", size, (255, 255, 255))


@dataclass(frozen=True)
class Item:
    prompt: str
    response: str
    image: str          # image path in the pairs folder, BLANK, or "blank:WxH"
    image_id: str       # content hash of the image ("" for BLANK, the same "blank:WxH" for a sized blank)


class SmallRunRM:
    """A `train` run folder's small multimodal RM, behind the same interface as VLMRewardModel."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from audit.train.loop import CHECKPOINT, load_model

        self.model = load_model(Path(path) / CHECKPOINT).to(device)
        self.device = device
        cfg = self.model.config
        import hashlib

        blob = (Path(path) / CHECKPOINT).read_bytes()
        self.fingerprint = "rm-small-" + hashlib.blake2b(blob, digest_size=8).hexdigest()
        self.head_source = CHECKPOINT
        self.size, self.vocab = cfg["image_size"], cfg["vocab"]
        self.compiled = False             # `--compile` applies to VLMs only

    def n_tokens(self, prompt: str, response: str, image_size: tuple[int, int]) -> int:
        return 96

    def prepare(self, items: Sequence[Item], load: Callable[[str], object]) -> dict:
        import torch
        from PIL import Image

        from audit.train.models import hash_tokens

        pix = []
        for it in items:
            im = load(it.image).resize((self.size, self.size), Image.BILINEAR)
            pix.append(torch.from_numpy(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0))
        ids = lambda texts: torch.tensor([hash_tokens(t, self.vocab, 48) for t in texts], dtype=torch.long)  # noqa: E731
        return {"image": torch.stack(pix), "prompt": ids([it.prompt for it in items]),
                "response": ids([it.response for it in items])}

    def forward(self, batch: dict):
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.model(batch["image"], batch["prompt"], batch["response"])


class VLMAdapter:
    """VLMRewardModel behind the scorer's prepare / forward interface."""

    def __init__(self, rm) -> None:
        self.rm = rm
        self.device = rm.device           # pinned host memory for the loader when it is a GPU
        self.fingerprint, self.head_source = rm.fingerprint, rm.head_source
        self.compiled = rm.compiled

    def n_tokens(self, prompt: str, response: str, image_size: tuple[int, int]) -> int:
        return self.rm.n_tokens(prompt, response, image_size)

    def prepare(self, items: Sequence[Item], load: Callable[[str], object]) -> dict:
        processed = self.rm.process_images([load(it.image) for it in items])
        ids = [self.rm.encode(it.prompt, it.response, processed, i) for i, it in enumerate(items)]
        return self.rm.collate(ids, processed)

    def forward(self, batch: dict):
        return self.rm.forward(batch)


def load_reward_model(path: str, device: str = "cpu", max_length: int = 2048, trust_remote_code: bool = False,
                      compile: bool = False):
    """A `train` run folder (our small RM) or a Hugging Face VLM reward-model folder / id. `compile`:
    torch.compile the VLM's language model (dynamic shapes)."""
    from audit.vlm import VLMRewardModel

    p = Path(path)
    if _is_small_run(p):
        return SmallRunRM(p, device)
    from audit.train.loop import HF_CHECKPOINT

    if (p / HF_CHECKPOINT / "config.json").is_file():     # a `train --model VLM` run folder
        p = path = p / HF_CHECKPOINT
    return VLMAdapter(VLMRewardModel(path, device=device, max_length=max_length, trust_remote_code=trust_remote_code,
                                     compile=compile))


def _is_small_run(p: Path) -> bool:
    from audit.train.loop import CHECKPOINT

    if not (p / CHECKPOINT).is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(p / CHECKPOINT), framework="pt") as f:
        return "config" in (f.metadata() or {})


class _Batches:
    """Map-style dataset over prepared batches: the CPU work runs in DataLoader workers."""

    def __init__(self, scorer, items: Sequence[Item], batches: list[np.ndarray], load: Callable[[str], object]) -> None:
        self.scorer, self.items, self.batches, self.load = scorer, items, batches, load

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, j: int):
        b = self.batches[j]
        return b, self.scorer.prepare([self.items[i] for i in b], self.load)


def score_items(scorer, items: Sequence[Item], lengths: Sequence[int], load: Callable[[str], object],
                token_budget: int, workers: int = 0, stats: dict | None = None) -> np.ndarray:
    """Rewards for `items`, token-budget batched, CPU work overlapped in `workers` processes,
    out-of-memory batches split and retried."""
    import torch

    out = np.zeros(len(items), dtype=np.float32)
    batches = token_budget_batches(lengths, token_budget)
    loader = torch.utils.data.DataLoader(
        _Batches(scorer, items, batches, load), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=str(getattr(scorer, "device", "cpu")).startswith("cuda"),
        prefetch_factor=4 if workers else None)

    pending: list = []

    def forward(b: np.ndarray, batch: dict | None = None) -> None:
        if batch is None:                              # a half of a split batch: prepared here
            batch = scorer.prepare([items[i] for i in b], load)
        with torch.inference_mode():
            pending.append((b, scorer.forward(batch).float()))   # no sync per batch: the GPU runs ahead

    def describe(i: int) -> str:
        return f"one sequence of {lengths[i]} tokens (prompt {items[i].prompt[:40]!r})"

    splits = 0
    for b, batch in loader:                            # workers prepare the next batches meanwhile
        b = np.asarray(b)                              # the loader hands the index array back as a tensor
        try:
            forward(b, batch)
        except Exception as err:   # noqa: BLE001 - anything but out-of-memory is re-raised
            if not is_oom(err):
                raise
            del batch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            halves = np.array_split(b, 2) if len(b) > 1 else [b]   # one item: retried once, then named
            splits += 1 + run_batches(halves, forward, describe)
    for b, r in pending:
        out[b] = r.cpu().numpy()
    if stats is not None:
        stats["oom_splits"] = stats.get("oom_splits", 0) + splits
        stats["batches"] = stats.get("batches", 0) + len(batches)
        stats["tokens"] = stats.get("tokens", 0) + int(np.sum(lengths))
    return out


def blank_refs(image_paths: Sequence[str], blank: str, image_size: Callable[[str], tuple[int, int]]) -> list[str]:
    """The blank image reference per pair: BLANK (`reference`: white 224x224, as the paper's code) or
    "blank:WxH" (`match`: white at the pair's own image size, the same number of vision tokens)."""
    if blank == "reference":
        return [BLANK] * len(image_paths)
    sizes: dict[str, tuple[int, int]] = {}
    out = []
    for p in image_paths:
        if p not in sizes:
            sizes[p] = image_size(p)
        out.append("{}{}x{}".format(BLANK_AT, *sizes[p]))
    return out


def pair_items(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], image_paths: Sequence[str],
               image_ids: Sequence[str], blanks: Sequence[str]) -> list[Item]:
    """Four items per pair, in this order: chosen and rejected with the image, then with the blank."""
    items: list[Item] = []
    for p, c, r, path, iid, b in zip(prompts, chosen, rejected, image_paths, image_ids, blanks):
        b_id = "" if b == BLANK else b
        items += [Item(p, c, path, iid), Item(p, r, path, iid), Item(p, c, b, b_id), Item(p, r, b, b_id)]
    return items


def window_items(cols: dict[str, list], blanks: Sequence[str]) -> list[Item]:
    return pair_items(cols["prompt"], cols["chosen"], cols["rejected"], cols["image_path"], cols["image_id"], blanks)


def item_key(it: Item) -> bytes:
    return content_key(f"{it.image_id}\0{it.prompt}\0{it.response}")


def item_keys(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], image_ids: Sequence[str],
              blanks: Sequence[str]) -> np.ndarray:
    """The cache keys of `pair_items` (4 per pair, same order) without building the items."""
    from audit.encoders.cache import as_keys

    keys = []
    for p, c, r, iid, b in zip(prompts, chosen, rejected, image_ids, blanks):
        b_id = "" if b == BLANK else b
        keys += [content_key(f"{i}\0{p}\0{x}") for i, x in ((iid, c), (iid, r), (b_id, c), (b_id, r))]
    return as_keys(keys)


class RMEncoder:
    """The cache's `encode` / `size` for reward-model items: token counts (for sorting into batches)
    and rewards. Token counts are kept per window of items only, so memory does not grow with the data."""

    def __init__(self, scorer, load: Callable[[str], object], image_size: Callable[[str], tuple[int, int]],
                 token_budget: int, workers: int = 0) -> None:
        self.scorer, self.load, self.image_size = scorer, load, image_size
        self.token_budget, self.workers = token_budget, workers
        self.stats: dict = {}
        self._lengths: dict[Item, int] = {}
        self._sizes: dict[str, tuple[int, int]] = {}

    def _size_of(self, ref: str) -> tuple[int, int]:
        if ref not in self._sizes:
            if len(self._sizes) > 65536:
                self._sizes.clear()
            self._sizes[ref] = blank_size(ref) or self.image_size(ref)
        return self._sizes[ref]

    def size(self, it: Item) -> int:
        """Token count, computed once per distinct item (of the current window)."""
        if it not in self._lengths:
            if len(self._lengths) > 65536:
                self._lengths.clear()
            self._lengths[it] = self.scorer.n_tokens(it.prompt, it.response, self._size_of(it.image))
        return self._lengths[it]

    def encode(self, chunk: list[Item]) -> np.ndarray:
        lengths = [self.size(it) for it in chunk]
        return score_items(self.scorer, chunk, lengths, self.load, self.token_budget, self.workers, self.stats)[:, None]


def rm_summary(margin: np.ndarray, blank_margin: np.ndarray, text_margin: np.ndarray) -> dict:
    from audit import metrics

    flip = (margin > 0) != (blank_margin > 0)
    return {"acc": metrics.accuracy(margin), "blank_acc": metrics.accuracy(blank_margin),
            "flip_rate": float(flip.mean()) if flip.size else float("nan"),
            "sfd_vs_text": metrics.sfd(text_margin, margin),
            "blank_agrees_with_text": float(((blank_margin > 0) == (text_margin > 0)).mean()) if flip.size else float("nan"),
            "mean_abs_margin_change": float(np.abs(margin - blank_margin).mean()) if flip.size else float("nan")}


from audit.probes.base import Probe, ProbeResult, register  # noqa: E402


@register
class RewardModelProbe(Probe):
    """The user's multimodal reward model (`--rm`), scored with each pair's image and with a blank
    one: its margin is the multimodal side (the paper's SFC), the blank-image margin shows how much
    of its preference survives without the picture."""

    name, role, needs = "reward-model", "mm", frozenset({"rm"})

    @classmethod
    def selected(cls, cfg) -> bool:
        return bool(cfg.rm)

    def fit(self, ctx, fitted) -> ProbeResult:
        cfg = self.cfg
        scorer, res = ctx.inputs["rm"]
        margin, blank = res["margin"], res["blank_margin"]
        columns = [("rm_margin", margin, None), ("rm_blank_margin", blank, None),
                   ("rm_flip", (margin > 0) != (blank > 0), None)]   # the preferred response changes when blanked
        info = {"model": cfg.rm, "head": scorer.head_source, "fingerprint": scorer.fingerprint,
                "blank_image": "white 224x224 RGB" if cfg.rm_blank == "reference" else "white, each image's own size",
                "token_budget": cfg.token_budget, **res["stats"], "compiled": scorer.compiled}
        return ProbeResult(margin, calibrate=False, columns=columns, encoder={"mm": "reward model", "rm": cfg.rm},
                           extra={"info": info, "margin": margin, "blank": blank})

    def summary(self, result: ProbeResult, margins) -> dict:
        e = result.extra
        return {"rm": {**e["info"], **rm_summary(e["margin"], e["blank"], margins["text"])}}
