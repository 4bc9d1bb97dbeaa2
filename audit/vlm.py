"""Vision-language reward models: a Hugging Face image-text-to-text backbone (Qwen2-VL / Qwen2.5-VL and
Llava families) with a scalar head read at the last non-pad token, the common reward-model convention.

Inputs are built by hand, not through the model's `Processor` (Qwen2-VL's needs torchvision): the
tokenizer's chat template (or the family's plain format when the tokenizer has none) renders
`user: <image> prompt` / `assistant: response`, the image placeholder is expanded to the number of
vision tokens the family uses, and the image goes through the model's own image processor (PIL
backend). The backbone's language-model head is never run: only the last hidden state is read.

A reward model folder is a saved backbone plus its head, found as (in this order):
`reward_head.safetensors` (`weight` (1, H), optional `bias`), or a (1, H) tensor named
`score` / `reward_head` / `value_head` / `v_head` / `v_head.summary` / `rm_head` (`.weight`, `.bias`)
in the folder's own safetensors files (TRL, OpenRLHF and most published RMs use one of these).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from audit.errors import ConfigError

log = logging.getLogger(__name__)

HEAD_FILE = "reward_head.safetensors"
HEAD_NAMES = ("score", "reward_head", "value_head", "v_head", "v_head.summary", "rm_head")
BLANK_SIZE = 224     # the reference code's text-only input: a white 224x224 picture


def blank_image():
    """The white 224x224 RGB picture the paper's reference code feeds its text-only branch."""
    from PIL import Image

    return Image.new("RGB", (BLANK_SIZE, BLANK_SIZE), (255, 255, 255))


def open_image(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


@dataclass(frozen=True)
class Family:
    name: str
    fallback_format: str          # used when the tokenizer has no chat template; {image} is the placeholder

    def n_image_tokens(self, model_config, processed: dict, i: int) -> int:
        raise NotImplementedError


class _Qwen2VL(Family):
    def n_image_tokens(self, model_config, processed: dict, i: int) -> int:
        merge = model_config.vision_config.spatial_merge_size
        return int(processed["image_grid_thw"][i].prod()) // (merge * merge)


class _Llava(Family):
    def n_image_tokens(self, model_config, processed: dict, i: int) -> int:
        h, w = processed["pixel_values"].shape[-2:]
        patch = model_config.vision_config.patch_size
        n = (h // patch) * (w // patch)
        return n + (1 if getattr(model_config, "vision_feature_select_strategy", "default") == "full" else 0)


_QWEN_FMT = ("<|im_start|>user\n<|vision_start|>{image}<|vision_end|>{prompt}<|im_end|>\n"
             "<|im_start|>assistant\n{response}<|im_end|>")
FAMILIES = {
    "qwen2_vl": _Qwen2VL("qwen2_vl", _QWEN_FMT),
    "qwen2_5_vl": _Qwen2VL("qwen2_5_vl", _QWEN_FMT),
    "llava": _Llava("llava", "USER: {image}\n{prompt} ASSISTANT: {response}"),
}


def _find_head(path: Path) -> tuple[dict, str]:
    """The reward head's tensors ({'weight', 'bias'?}) and where they came from."""
    from safetensors import safe_open

    own = path / HEAD_FILE
    if own.is_file():
        with safe_open(str(own), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, own.name
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            keys = set(f.keys())
            for name in HEAD_NAMES:
                for k in sorted(keys):
                    stem = k.rsplit(".", 1)[0]
                    if k.endswith(".weight") and (stem == name or stem.endswith("." + name)):
                        t = f.get_tensor(k)
                        if t.ndim == 2 and t.shape[0] == 1:
                            head = {"weight": t}
                            if stem + ".bias" in keys:
                                head["bias"] = f.get_tensor(stem + ".bias")
                            return head, f"{file.name}:{stem}"
    raise ConfigError(f"no reward head in `{path}`: expected `{HEAD_FILE}` or a (1, hidden) tensor named one of "
                      f"{', '.join(HEAD_NAMES)} (+ `.weight`) in its safetensors files")


class VLMRewardModel:
    """r(image, prompt, response) of a Hugging Face VLM with a scalar head at the last non-pad token."""

    def __init__(self, path: str | Path, device: str = "cpu", max_length: int = 2048, head: dict | None = None,
                 trust_remote_code: bool = False, attn_implementation: str | None = None, keep_full: bool = False,
                 compile: bool = False, dtype=None, autocast_bf16: bool = False) -> None:
        import torch
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.path = Path(path)
        try:
            config = AutoConfig.from_pretrained(self.path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load reward model `{path}` ({str(e).splitlines()[0]}); pass a local folder "
                              "or a model id in the local Hugging Face cache (nothing is downloaded offline)") from None
        if config.model_type not in FAMILIES:
            raise ConfigError(f"`--rm {path}` is a `{config.model_type}` model; supported vision-language families: "
                              f"{', '.join(FAMILIES)} (or a `train` run folder)")
        self.family = FAMILIES[config.model_type]
        self.device = device
        # scoring: bf16 weights on a GPU; training passes fp32 (master weights) and autocasts instead
        self.dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
        self.autocast_bf16 = autocast_bf16
        kw = {"dtype": self.dtype, "trust_remote_code": trust_remote_code}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        full = AutoModelForImageTextToText.from_pretrained(self.path, **kw)
        self.body = full.model          # the backbone without the language-model head
        self.full = full if keep_full else None   # `train` saves the whole model with save_pretrained
        self.body.to(device).eval()
        self.compiled = False
        if compile:   # the language model only (most of the FLOPs); the vision tower and merge stay eager
            lm = getattr(self.body, "language_model", None)
            if lm is None:
                raise ConfigError(f"`--compile`: `{path}` has no `language_model` submodule to compile")
            lm.compile(dynamic=True)   # in place: parameter names (and saved checkpoints) are unchanged
            self.compiled = True
        self.config = full.config
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            self.image_processor = AutoImageProcessor.from_pretrained(self.path, backend="pil")
        except TypeError:   # transformers 4.x
            self.image_processor = AutoImageProcessor.from_pretrained(self.path, use_fast=False)
        hidden = self.config.get_text_config().hidden_size
        head, self.head_source = (head, "given") if head is not None else _find_head(self.path)
        if tuple(head["weight"].shape) != (1, hidden):
            raise ConfigError(f"reward head in `{path}` has shape {tuple(head['weight'].shape)}; the backbone's hidden "
                              f"size is {hidden}, so it must be (1, {hidden})")
        self.head = torch.nn.Linear(hidden, 1, bias="bias" in head)
        with torch.no_grad():
            self.head.weight.copy_(head["weight"].float())
            if "bias" in head:
                self.head.bias.copy_(head["bias"].float().reshape(1))
        self.head.to(device).eval()
        self.max_length = max_length
        self.image_token_id = int(self.config.image_token_id)
        self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        import inspect

        self._wants_mm_types = "mm_token_type_ids" in inspect.signature(self.body.forward).parameters
        blob = json.dumps(self.config.to_dict(), sort_keys=True, default=str) + self.head_source
        blob += hashlib.blake2b(head["weight"].float().numpy().tobytes(), digest_size=8).hexdigest()
        self.fingerprint = "rm-" + hashlib.blake2b(f"{self.path.name}|{max_length}|v1|{blob}".encode(),
                                                   digest_size=8).hexdigest()

    # ---- inputs ---------------------------------------------------------------------------------
    def render(self, prompt: str, response: str) -> str:
        """The conversation as text with one image placeholder."""
        if getattr(self.tokenizer, "chat_template", None):
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
                    {"role": "assistant", "content": [{"type": "text", "text": response}]}]
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False)
            if self.image_token in text:
                return text
        return self.family.fallback_format.format(image=self.image_token, prompt=prompt, response=response)

    def process_images(self, images: Sequence) -> dict:
        return dict(self.image_processor(images=list(images), return_tensors="pt"))

    def encode(self, prompt: str, response: str, processed: dict, i: int) -> list[int]:
        """Token ids with the image placeholder expanded; truncated from the end to `max_length`."""
        n_img = self.family.n_image_tokens(self.config, processed, i)
        text = self.render(prompt, response).replace(self.image_token, self.image_token * n_img, 1)
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) > self.max_length:
            last_img = max(j for j, t in enumerate(ids) if t == self.image_token_id)
            if last_img >= self.max_length:
                raise ConfigError(f"`--rm-max-length` {self.max_length} cuts into the image's {n_img} tokens; raise it")
            ids = ids[:self.max_length]
        return ids

    def n_tokens(self, prompt: str, response: str, image_size: tuple[int, int]) -> int:
        """Cheap length estimate for sorting into batches (text tokens + image tokens)."""
        text = len(self.tokenizer(self.render(prompt, response), add_special_tokens=True)["input_ids"])
        w, h = image_size
        if isinstance(self.family, _Qwen2VL):
            p = self.config.vision_config.patch_size * self.config.vision_config.spatial_merge_size
            lo = getattr(self.image_processor, "min_pixels", None) or 56 * 56
            hi = getattr(self.image_processor, "max_pixels", None) or 28 * 28 * 1280
            scale = min(max(1.0, (lo / max(w * h, 1)) ** 0.5), (hi / max(w * h, 1)) ** 0.5)
            n = max(1, round(h * scale / p)) * max(1, round(w * scale / p))
        else:
            n = (self.config.vision_config.image_size // self.config.vision_config.patch_size) ** 2
        return min(text - 1 + n, self.max_length)   # the placeholder becomes n tokens

    def collate(self, ids: list[list[int]], processed: dict) -> dict:
        import torch

        longest = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for r, x in enumerate(ids):                      # right padding: the reward reads the last real token
            input_ids[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask, "pixel_values": processed["pixel_values"]}
        if "image_grid_thw" in processed:
            batch["image_grid_thw"] = processed["image_grid_thw"]
        if self._wants_mm_types:   # newer Qwen2-VL code computes M-RoPE from it (0 text, 1 image)
            batch["mm_token_type_ids"] = (input_ids == self.image_token_id).long()
        return batch

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, batch: dict):
        """Rewards (B,) float32 for a collated batch."""
        import torch

        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            hidden = self.body(**batch).last_hidden_state                 # (B, T, H)
        last = batch["attention_mask"].sum(1) - 1                         # right padding
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(h.float()).squeeze(-1)

    def rewards(self, prompts: Sequence[str], responses: Sequence[str], images: Sequence) -> np.ndarray:
        """One reward per (prompt, response, PIL image), in one forward pass (callers batch)."""
        import torch

        processed = self.process_images(images)
        ids = [self.encode(p, r, processed, i) for i, (p, r) in enumerate(zip(prompts, responses))]
        with torch.inference_mode():
            return self.forward(self.collate(ids, processed)).float().cpu().numpy()


def save_head(path: Path, weight, bias=None) -> None:
    """Write `reward_head.safetensors` beside a saved backbone (what `train` and tests write)."""
    from safetensors.torch import save_file

    from audit.io import atomic_path

    tensors = {"weight": weight.detach().float().contiguous().reshape(1, -1)}
    if bias is not None:
        tensors["bias"] = bias.detach().float().contiguous().reshape(1)
    with atomic_path(Path(path) / HEAD_FILE) as tmp:
        save_file(tensors, str(tmp))
