"""Small file helpers: atomic writes (temp file in the same folder, then `os.replace`) and JSON."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    mask = os.umask(0)      # mkstemp makes the file 0600; an output gets the mode any new file would
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _finite(obj: Any) -> Any:
    """NaN and infinities become null: JSON has no NaN, and strict readers reject it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        text = json.dumps(_finite(obj), indent=2, ensure_ascii=False, default=str, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")


def versions() -> dict[str, str]:
    """Versions of the packages that shape outputs, recorded beside every output."""
    from importlib import metadata
    import platform

    out = {"python": platform.python_version()}
    for name in ("shortcut-audit", "numpy", "pyarrow", "polars", "pillow", "torch", "transformers", "datasets"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_output(out: Path, inputs: list, command: str, holds: bool = True) -> None:
    """Refuse an output folder that is a file, or that is (or, with `holds`, contains) one of the
    command's inputs: writing there would replace the user's own data."""
    from audit.errors import ConfigError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"`-o {out}` is a file; `{command}` writes a folder: pass a folder path")
    r_out = out.resolve()
    for inp in inputs:
        if inp is None:
            continue
        r_in = Path(inp).resolve()
        if r_out == r_in or (holds and r_out in r_in.parents):
            raise ConfigError(f"`-o {out}` {'is' if r_out == r_in else 'holds'} the input `{inp}`: `{command}` would "
                              "replace your own data there; pass another output folder")


@contextlib.contextmanager
def output_lock(out: Path, command: str) -> Iterator[None]:
    """Hold `OUT/.shortcut-audit.lock` while a command writes into OUT: a second run into the same
    folder stops at once with a clear error instead of mixing its files with the first's."""
    from filelock import FileLock, Timeout

    from audit.errors import ConfigError

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".shortcut-audit.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another `{command}` is writing into `{out}` right now (lock `{lock.lock_file}`); "
                          "wait for it to finish, or pass another `-o`") from None
    try:
        yield
    finally:
        lock.release()

