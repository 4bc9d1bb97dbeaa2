"""Training data for `train` / `eval`: any pairs folder, audit folder, export or source, as tensors.

Only `ok` rows are used; images are decoded once into a uint8 tensor at the small model's size (a VLM
backbone reads each image file at its own resolution instead, `PairData.native_images`); texts are
hashed into token ids. Weights come from the data's `weight` column when present."""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audit import schema
from audit.errors import FormatError
from audit.images import image_roots, resolve_image
from audit.train.models import hash_tokens


@dataclass
class PairData:
    prompt: torch.Tensor      # (N, T) token ids
    chosen: torch.Tensor
    rejected: torch.Tensor
    images: torch.Tensor      # (N, 3, S, S) uint8
    weight: torch.Tensor | None
    cue_on_chosen: np.ndarray | None
    table: object             # the polars rows used (ok only)
    features: dict = field(default_factory=dict)   # frozen scene-encoder features, see loop.vision_features
    image_files: list | None = None   # each row's image file (checked inside its roots): a VLM reads it at
                                      # its own resolution; None when the pairs were ingested into a temp folder

    def native_images(self, rows: list[int]) -> list:
        """The rows' images at their own size (a VLM's processor resizes them as the model expects), or
        the decoded `image_size` copies when the files are gone."""
        if self.image_files is None:
            from audit.train.vlm_rm import to_pil

            return to_pil(self.images[torch.as_tensor(rows)])
        from audit.vlm import open_image

        return [open_image(self.image_files[i].read_bytes()) for i in rows]

    def __len__(self) -> int:
        return self.prompt.shape[0]


def _table_and_dir(path: Path, workdir: Path):
    import polars as pl

    path = Path(path)
    if (path / "audited.parquet").is_file():
        summary = json.loads((path / "summary.json").read_text())
        return pl.read_parquet(path / "audited.parquet"), schema.pairs_dir_of(path, summary)
    if (path / schema.PAIRS_FILE).is_file() and (path / schema.REPORT_FILE).is_file():
        return pl.read_parquet(path / schema.PAIRS_FILE), path
    from audit.config import IngestConfig
    from audit.ingest import ingest

    out = workdir / "pairs"
    ingest(IngestConfig(source=path, out=out, overwrite=True))   # the run's own copy, redone on resume
    return pl.read_parquet(out / schema.PAIRS_FILE), out


def data_fingerprint(path: Path) -> str:
    """A hash of what `load_pairs` reads from `path` (an audit's audited.parquet, a pairs folder's
    pairs.parquet, or a source's data files): the same content gives the same value wherever it lies."""
    import hashlib

    path = Path(path)
    if (path / "audited.parquet").is_file():
        files = [path / "audited.parquet"]
    elif (path / schema.PAIRS_FILE).is_file() and (path / schema.REPORT_FILE).is_file():
        files = [path / schema.PAIRS_FILE]
    else:
        from audit.sources.readers import locate

        files = locate(path).files
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        h.update(b"\x00")
    return h.hexdigest()[:16]


def load_pairs(path: Path, image_size: int, vocab: int, max_len: int = 48, workdir: Path | None = None) -> PairData:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        table, pairs_dir = _table_and_dir(path, Path(workdir or tmp))
        table = table.filter(table["status"] == schema.OK)
        if table.height == 0:
            raise FormatError(f"`{path}` has no usable (`ok`) pairs to train or evaluate on")
        roots = image_roots(pairs_dir)
        cache: dict[str, np.ndarray] = {}
        images = np.zeros((table.height, 3, image_size, image_size), dtype=np.uint8)
        files, file_of = [], {}
        for i, (iid, p) in enumerate(zip(table["image_id"].to_list(), table["image_path"].to_list())):
            if iid not in file_of:       # each distinct image resolved and decoded once
                file_of[iid] = resolve_image(pairs_dir, p, allowed_roots=roots)
            files.append(file_of[iid])
            if iid not in cache:
                im = Image.open(io.BytesIO(files[-1].read_bytes()))
                im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                cache[iid] = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
            images[i] = cache[iid]
        in_tmp = Path(pairs_dir).resolve().is_relative_to(Path(tmp).resolve())   # deleted on return

    def ids(col: str) -> torch.Tensor:
        return torch.tensor([hash_tokens(t, vocab, max_len) for t in table[col].to_list()], dtype=torch.long)

    weight = torch.tensor(table["weight"].to_numpy(), dtype=torch.float32) if "weight" in table.columns else None
    truth = table["cue_on_chosen"].to_numpy() if "cue_on_chosen" in table.columns else None
    return PairData(ids("prompt"), ids("chosen"), ids("rejected"), torch.from_numpy(images), weight, truth, table,
                    image_files=None if in_tmp else files)
