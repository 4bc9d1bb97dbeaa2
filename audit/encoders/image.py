"""Image featurisers for the multimodal probe.

`pixels` (the offline default, no download): colour histograms of the whole image and of its four
quadrants plus an 8x8 grey thumbnail. It sees colours, brightness and coarse layout (which colour is
where, roughly how much of it); it cannot see object identity, counts beyond blob size, text in the
image, or anything semantic. Real datasets need a real vision encoder: pass any Hugging Face CLIP /
SigLIP / vision model by id or local path (`--image-encoder`).
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Sequence

import numpy as np

from audit.errors import ConfigError

DEFAULT_IMAGE_ENCODER = "pixels"
_BINS = 4   # per channel: 4^3 = 64 colour bins


def _open_rgb(data: bytes, size: int):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (size, size))
    return im.convert("RGB")


class PixelFeaturiser:
    """Colour histograms (whole + 4 quadrants) and a grey thumbnail: 5*64 + 64 = 384 features."""

    fingerprint = "image-pixels-v1"
    dim = 5 * _BINS**3 + 64

    def encode(self, images: Sequence[bytes]) -> np.ndarray:
        from PIL import Image
        from tqdm.auto import tqdm

        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, data in enumerate(tqdm(images, desc="featurise images", unit="img", disable=None, leave=False)):
            im = _open_rgb(data, 64).resize((64, 64), Image.BILINEAR)
            px = np.asarray(im, dtype=np.int64)                       # (64, 64, 3)
            bins = (px * _BINS) // 256
            code = (bins[..., 0] * _BINS + bins[..., 1]) * _BINS + bins[..., 2]   # (64, 64) colour bin
            feats = [np.bincount(code.ravel(), minlength=_BINS**3) / code.size]
            for qy in (0, 32):
                for qx in (0, 32):
                    q = code[qy:qy + 32, qx:qx + 32]
                    feats.append(np.bincount(q.ravel(), minlength=_BINS**3) / q.size)
            grey = np.asarray(im.convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float32) / 255.0
            feats.append(grey.ravel())
            out[i] = np.sqrt(np.concatenate(feats))                   # sqrt: Hellinger-like scaling
        return out


class HFImageEncoder:
    """Pooled image features of a Hugging Face vision model (CLIP, SigLIP, ViT, ...)."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        try:
            try:
                self.processor = AutoImageProcessor.from_pretrained(name, backend="pil")
            except TypeError:   # transformers 4.x
                self.processor = AutoImageProcessor.from_pretrained(name, use_fast=False)
            self.model = AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load image encoder `{name}` ({str(e).splitlines()[0]}); pass a local folder "
                              "or a model id in the local Hugging Face cache (nothing is downloaded offline)") from None
        self.device, self.batch_size = device, batch_size
        self.dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.model.to(device, dtype=self.dtype).eval()
        cfg = json.dumps(self.model.config.to_dict(), sort_keys=True, default=str)
        self.fingerprint = "image-" + hashlib.blake2b(f"{name}|{cfg}".encode(), digest_size=8).hexdigest()
        self.dim = None

    def _features(self, pixel_values):
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=pixel_values)
            return out if not hasattr(out, "pooler_output") else out.pooler_output
        out = self.model(pixel_values=pixel_values)
        if getattr(out, "pooler_output", None) is not None:
            return out.pooler_output
        return out.last_hidden_state.mean(1)

    def encode(self, images: Sequence[bytes]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        chunks = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(images), self.batch_size), desc="encode images", unit="batch",
                              disable=None, leave=False):
                pil = [_open_rgb(b, 512) for b in images[start:start + self.batch_size]]
                pv = self.processor(images=pil, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
                chunks.append(self._features(pv).float().cpu().numpy())
        out = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        self.dim = out.shape[1] if out.size else self.dim
        return out.astype(np.float32)


def load_image_encoder(name: str = DEFAULT_IMAGE_ENCODER, device: str = "cpu", **kw):
    if name == DEFAULT_IMAGE_ENCODER:
        return PixelFeaturiser()
    return HFImageEncoder(name, device=device, **kw)
