"""Small file helpers: atomic writes (temp file in the same folder, then `os.replace`) and JSON."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


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


LOCK_NAME = ".shortcut-audit.lock"
MARKER = ".shortcut-audit.json"     # which command wrote a folder, and whether it finished


def read_marker(out: Path) -> dict | None:
    """The marker a command left in `out` (None when there is none, or it is not ours)."""
    try:
        m = json.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and isinstance(m.get("command"), str) else None


def _inside_any(p: Path, inputs: list[Path]) -> bool:
    """`p` is one of `inputs` or holds one: replacing the folder must leave it alone."""
    rp = p.resolve()
    return any(rp == i or rp in i.parents for i in inputs)


ASIDE = ".shortcut-audit-replaced"   # an earlier output, kept until the run that replaces it finishes


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def _own_entries(out: Path, inputs: list[Path]) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name not in (LOCK_NAME, MARKER, ASIDE) and not _inside_any(p, inputs))


def _roll_back(out: Path, inputs: list[Path]) -> None:
    """Put back the earlier output that a failed (or killed) replacement set aside."""
    for p in _own_entries(out, inputs):
        _remove(p)
    (out / MARKER).unlink(missing_ok=True)
    for p in (out / ASIDE).iterdir():
        os.replace(p, out / p.name)
    (out / ASIDE).rmdir()


@contextlib.contextmanager
def claim_output(out: Path, command: str, inputs: list = (), *, overwrite: bool = False,
                 resumable: bool = False, replace_own: bool = False, holds: bool = True,
                 keep: tuple[str, ...] = ()) -> Iterator[None]:
    """Own the output folder `out` for one run of `command`.

    `out` must not be, or (with `holds`) contain, one of `inputs`. It may be new or empty. A folder the
    same command wrote before is continued when the command is `resumable` (score, train, bench and demo
    resume or update their own files), or replaced with `replace_own` (a card). Anything else is refused,
    unless `overwrite` and some shortcut-audit command wrote it (a folder of the user's own is never
    deleted). A replaced folder's earlier contents are set aside in `OUT/.shortcut-audit-replaced` and
    put back if the run fails or is killed (the next run restores them), deleted once it finishes.
    The lock (`output_lock`) is held for the whole run; `OUT/.shortcut-audit.json` records the command
    and whether it finished. `keep`: file names copied back into a replaced folder (the user's own work
    kept beside an output, e.g. an audit's tags)."""
    from audit.errors import ConfigError

    check_output(out, list(inputs), command, holds)
    out = Path(out)
    ins = [Path(i).resolve() for i in inputs if i is not None]
    with output_lock(out, command):
        if (out / ASIDE).is_dir():
            log.warning("`%s`: an earlier run that was replacing this folder did not finish; its previous contents "
                        "are restored", out)
            _roll_back(out, ins)
        entries = _own_entries(out, ins)
        prior = read_marker(out)
        replacing = False
        if entries:
            shown = ", ".join(f"`{p.name}`" for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
            if prior is None:
                raise ConfigError(
                    f"`-o {out}` is not empty ({shown}) and was not written by shortcut-audit (no `{MARKER}` in it); "
                    "pass a new or empty folder. `--overwrite` only replaces a folder that shortcut-audit wrote, so "
                    "it never deletes files of your own")
            if overwrite or (replace_own and prior["command"] == command):
                (out / ASIDE).mkdir()
                for p in [*entries, out / MARKER]:
                    os.replace(p, out / ASIDE / p.name)
                for name in keep:
                    if (out / ASIDE / name).is_file():
                        shutil.copy2(out / ASIDE / name, out / name)
                replacing = True
            elif not (resumable and prior["command"] == command):
                raise ConfigError(
                    f"`-o {out}` already holds an earlier `{prior['command']}` output ({shown}); pass `--overwrite` "
                    "to replace it whole (the earlier contents are deleted once the new run finishes), or another "
                    "folder")
        info = {"command": command, "state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "version": versions().get("shortcut-audit", "unknown")}
        write_json_atomic(out / MARKER, info)
        try:
            yield
        except BaseException:
            if replacing:
                _roll_back(out, ins)
            raise
        write_json_atomic(out / MARKER, {**info, "state": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if replacing:
            shutil.rmtree(out / ASIDE)


@contextlib.contextmanager
def output_lock(out: Path, command: str) -> Iterator[None]:
    """Hold `OUT/.shortcut-audit.lock` while a command writes into OUT: a second run into the same
    folder stops at once with a clear error instead of mixing its files with the first's."""
    from filelock import FileLock, Timeout

    from audit.errors import ConfigError

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another `{command}` is writing into `{out}` right now (lock `{lock.lock_file}`); "
                          "wait for it to finish, or pass another `-o`") from None
    try:
        yield
    finally:
        lock.release()

