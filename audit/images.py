"""Images of a pairs table: verified once, embedded bytes stored once by content hash, paths kept
as paths but only inside the allowed roots (a `../` or a symlink that escapes is refused).

`image_path` in the table is relative to the pairs folder for stored images and absolute for
images that stay in the source root; `resolve_image` turns it back into a file, safely.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from audit import schema
from audit.io import write_bytes_atomic
from audit.sources.base import ImageRef

_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "MPO": "jpg"}
MAX_FILE_BYTES = 256 << 20


@dataclass(frozen=True)
class ImageResult:
    path: str | None
    image_id: str | None
    status: str
    detail: str | None = None
    phash: str | None = None     # perceptual hash (audit.links), when the image was decoded
    thumb: str | None = None     # thumbnail of a smooth picture (audit.links), when the image was decoded


NO_SIGNATURE = (None, None)      # (perceptual hash, thumbnail) of an image that was not decoded


def check_image(data: bytes, max_pixels: int, full: bool) -> tuple[str, str | None, str | None, tuple]:
    """(status, detail, PIL format, (perceptual hash, thumbnail)) of encoded image bytes, without
    trusting the declared size. `full` decodes the image (catching truncation) and computes both from
    that one decode (`audit.links.image_signature`); otherwise only the header is read and both are None."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                return (schema.IMAGE_TOO_LARGE, f"declares {w}x{h} = {w * h} pixels, above --max-pixels {max_pixels}",
                        im.format, NO_SIGNATURE)
            if full:
                fmt = im.format
                if fmt == "JPEG":   # decode at a reduced scale (>= 64 px a side, what the hash reads): the whole stream, less work
                    im.draft("RGB", (min(w, 64), min(h, 64)))
                im.load()
                from audit.links import image_signature

                return schema.OK, None, fmt, image_signature(im)
            return schema.OK, None, im.format, NO_SIGNATURE
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            return schema.IMAGE_TOO_LARGE, f"decompression bomb refused ({e})", None, NO_SIGNATURE
        except UnidentifiedImageError:
            return schema.IMAGE_CORRUPT, "not a recognisable image file", None, NO_SIGNATURE
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, ZeroDivisionError) as e:
            return schema.IMAGE_CORRUPT, f"cannot be decoded ({e})", None, NO_SIGNATURE


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class ImageStore:
    """Resolves, verifies and stores the images of one ingest run (bounded LRU cache)."""

    def __init__(self, pairs_dir: Path, roots: list[Path], max_pixels: int, full_verify: bool,
                 cache_size: int = 8192, source_root: Path | None = None, copy: bool = False) -> None:
        self.pairs_dir = Path(pairs_dir)
        self.copy = copy         # store path-based images in the pairs folder too (`ingest --copy-images`)
        self.roots = [os.path.realpath(r) for r in roots]
        # Relative paths are read from the image root and, when `--image-root` points elsewhere (say, the
        # target of a symlinked `images/` folder), from the source's own folder too: the file must still
        # land inside an allowed root once every link is followed.
        self.source_root = source_root
        self.max_pixels, self.full = max_pixels, full_verify
        self._cache: OrderedDict[tuple, ImageResult] = OrderedDict()
        self._cache_size = cache_size
        self.stored = 0          # new files written to the store
        self.stored_bytes = 0
        self.checked = 0         # unique images decoded

    def _remember(self, key: tuple, res: ImageResult) -> ImageResult:
        self._cache[key] = res
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return res

    def _cached(self, key: tuple) -> ImageResult | None:
        res = self._cache.get(key)
        if res is not None:
            self._cache.move_to_end(key)
        return res

    def add(self, ref: ImageRef | None, root: Path) -> ImageResult:
        if ref is None:
            return ImageResult(None, None, schema.IMAGE_MISSING, "the record has no image")
        if ref.data is not None:
            return self.add_bytes(ref.data)
        return self.add_path(ref.path or "", root, ref.fallbacks)

    def add_bytes(self, data: bytes) -> ImageResult:
        digest = hashlib.sha256(data).hexdigest()[:32]
        key = ("b", digest)
        hit = self._cached(key)
        if hit is not None:
            return hit
        if not data:
            return self._remember(key, ImageResult(None, None, schema.IMAGE_MISSING, "the embedded image is empty"))
        status, detail, fmt, (phash, thumb) = check_image(data, self.max_pixels, self.full)
        self.checked += 1
        if status != schema.OK:
            return self._remember(key, ImageResult(None, digest, status, f"embedded image {detail}"))
        return self._remember(key, ImageResult(self._store(data, digest, fmt), digest, schema.OK, phash=phash,
                                               thumb=thumb))

    def _store(self, data: bytes, digest: str, fmt: str | None) -> str:
        """Write an image into the pairs folder's store (once per content); its path relative to the folder."""
        rel = f"{schema.IMAGE_STORE}/{digest[:2]}/{digest}.{_EXT.get(fmt or '', 'img')}"
        target = self.pairs_dir / rel
        if not target.exists():
            write_bytes_atomic(target, data)
            self.stored += 1
            self.stored_bytes += len(data)
        return rel

    def add_path(self, path: str, root: Path, fallbacks: tuple[str, ...] = ()) -> ImageResult:
        key = ("p", str(root), path, fallbacks)
        hit = self._cached(key)
        if hit is not None:
            return hit
        return self._remember(key, self._resolve_and_check(path, root, fallbacks))

    def _resolve_and_check(self, path: str, root: Path, fallbacks: tuple[str, ...]) -> ImageResult:
        if "\x00" in path:
            return ImageResult(None, None, schema.IMAGE_MISSING, "the image path contains a NUL byte")
        outside, looked = None, []
        bases = [Path(root)] + ([Path(self.source_root)] if self.source_root and Path(self.source_root) != Path(root) else [])
        for cand in (path, *fallbacks):
            p = Path(os.path.expanduser(cand)) if cand.startswith("~") else Path(cand)
            for base in ([None] if p.is_absolute() else bases):
                real = os.path.realpath(p if base is None else base / p)
                if not _inside(real, self.roots):
                    outside = outside or ImageResult(
                        None, None, schema.IMAGE_OUTSIDE_ROOT,
                        f"`{path}` resolves to `{real}`, outside the image root `{root}`: refused; if that is "
                        f"where the images are, pass `--image-root {os.path.dirname(real)}`")
                    continue
                if os.path.isfile(real):
                    return self._check_file(real)
                looked += [real] if real not in looked else []
        if outside is not None:
            return outside
        return ImageResult(None, None, schema.IMAGE_MISSING,
                           f"`{path}` not found: no file {' nor '.join(f'`{r}`' for r in looked)} (image root "
                           f"`{os.path.abspath(root)}`); put the image there, or pass the folder that holds the images "
                           "as `--image-root`")

    def _check_file(self, real: str) -> ImageResult:
        try:
            size = os.path.getsize(real)
            if size > MAX_FILE_BYTES:
                return ImageResult(None, None, schema.IMAGE_TOO_LARGE, f"`{real}` is {size} bytes, above {MAX_FILE_BYTES}")
            with open(real, "rb") as fh:
                data = fh.read()
        except OSError as e:
            return ImageResult(None, None, schema.IMAGE_MISSING, f"`{real}` cannot be read ({e.strerror or e})")
        digest = hashlib.sha256(data).hexdigest()[:32]
        status, detail, fmt, (phash, thumb) = check_image(data, self.max_pixels, self.full)
        self.checked += 1
        if status != schema.OK:
            return ImageResult(None, digest, status, f"`{real}` {detail}")
        return ImageResult(self._store(data, digest, fmt) if self.copy else real, digest, schema.OK, phash=phash,
                           thumb=thumb)


def image_roots(pairs_dir: Path) -> list[Path]:
    """The source image roots a pairs folder's ingest recorded (besides the folder itself)."""
    import json

    rep = Path(pairs_dir) / schema.REPORT_FILE
    try:
        return [Path(r) for r in json.loads(rep.read_text(encoding="utf-8")).get("image_roots", [])]
    except (OSError, ValueError, AttributeError):
        return []


def resolve_image(pairs_dir: Path, image_path: str, allowed_roots: list[Path] | None = None) -> Path:
    """The file behind an `image_path` cell; refuses anything outside the pairs folder and its roots."""
    pairs_dir = Path(pairs_dir)
    p = Path(image_path)
    full = p if p.is_absolute() else pairs_dir / p
    real = os.path.realpath(full)
    roots = [os.path.realpath(pairs_dir), *(os.path.realpath(r) for r in (allowed_roots or []))]
    if not _inside(real, roots):
        raise PermissionError(f"`{image_path}` is outside the dataset folder and its image roots")
    return Path(real)
