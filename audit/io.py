"""Small file helpers: atomic writes (temp file in the same folder, then `os.replace`) and JSON."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_dir_beside(path: Path) -> Path:
    """A new empty folder beside `path` (same filesystem, so it can be renamed over `path`) with the mode
    any new folder gets: mkdtemp makes it 0700 whatever the umask, and it becomes an output a teammate
    must be able to read."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600, and some writers (safetensors) make their own file anew: the output
        # gets the mode any new file would, set once it is written
        if tmp_path.is_file():
            os.chmod(tmp_path, 0o666 & ~current_umask())
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
JOURNAL = ".shortcut-audit-switch.json"   # an `--overwrite` in progress: which side of it is whole
OLD = ".shortcut-audit-old"         # the earlier output, whole, while the run that replaces it writes
LEGACY_ASIDE = ".shortcut-audit-replaced"   # where versions without the journal set an earlier output aside
BOOKKEEPING = (LOCK_NAME, MARKER, JOURNAL, OLD)
_STATES = ("moving-aside", "building", "restoring", "finishing")
# what a killed atomic write of the marker or the journal leaves (`atomic_path`'s temporary name)
_BOOKKEEPING_TMP = re.compile(r"\.\.shortcut-audit(\.json|-switch\.json)\.[A-Za-z0-9_]+\.tmp")


def _lstat_is(p: Path, kind) -> bool:
    try:
        return kind(os.lstat(p).st_mode)
    except OSError:
        return False


def regular_file(p: Path) -> bool:
    """`p` is a plain file: not a link, folder, FIFO or device (only such a file is read as ours)."""
    return _lstat_is(p, stat.S_ISREG)


def read_json_file(p: Path, limit: int = 1 << 20) -> Any:
    """A small JSON file of ours, or None (missing, not a plain file, too big, not JSON): never blocks
    on a FIFO or follows a link."""
    if not regular_file(p):
        return None
    try:
        with open(p, "rb") as fh:
            data = fh.read(limit + 1)
        return json.loads(data.decode("utf-8")) if len(data) <= limit else None
    except (OSError, ValueError, RecursionError):
        return None


def read_marker(out: Path) -> dict | None:
    """The marker a command left in `out` (None when there is none, or it is not ours)."""
    m = read_json_file(Path(out) / MARKER)
    return m if isinstance(m, dict) and isinstance(m.get("command"), str) else None


def missing_folders(out: Path) -> list[Path]:
    """`out` and the folders above it that do not exist yet (`out` first): what a run into `out` creates."""
    out = Path(out).absolute()
    return [d for d in (out, *out.parents) if not os.path.lexists(d)]


@contextlib.contextmanager
def removed_on_failure(created: list[Path]) -> Iterator[None]:
    """A run that created its output folder (`created`: `missing_folders(out)` taken before it began) and
    then stops on bad input (a domain error) leaves no half-made folder: the folder is removed again, and
    so is each folder above it that the run created and left empty. A folder that existed before the run
    is left as the run left it (`claim_output` resumes or rolls it back). Only domain errors: an
    interrupted or crashed run keeps what it wrote, to resume. Enter it inside `claim_output`, so that a
    run refused the folder (another run holds it) removes nothing."""
    from audit.errors import AuditError

    try:
        yield
    except AuditError:
        if created and os.path.isdir(created[0]) and not os.path.islink(created[0]):
            shutil.rmtree(created[0], ignore_errors=True)
            for d in created[1:]:
                try:
                    os.rmdir(d)
                except OSError:
                    break
        raise


def _inside_any(p: Path, inputs: list[Path]) -> bool:
    """`p` is one of `inputs` or holds one: replacing the folder must leave it alone."""
    rp = p.resolve()
    return any(rp == i or rp in i.parents for i in inputs)


def _remove(p: Path) -> None:
    """Delete `p`; a link is removed, never followed."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def _own_entries(out: Path, reads: list[Path], keep: tuple[str, ...]) -> list[Path]:
    """The entries of `out` that make up its output: not the bookkeeping, not what the user keeps there
    (`keep`), not an input of the run (or a folder that holds one)."""
    return sorted(p for p in out.iterdir()
                  if p.name not in BOOKKEEPING and p.name not in keep and not _inside_any(p, reads))


# ---- replacing a folder: the journal ------------------------------------------------------------
# `--overwrite` moves the earlier output into OUT/.shortcut-audit-old (one rename per entry), lets the
# run write, and deletes the old folder once the new marker says `finished`. OUT/.shortcut-audit-switch.json
# says at every moment which side is whole: `moving-aside` and `restoring` (the earlier output, partly
# moved: every entry goes back), `building` (the earlier output is whole aside; the new one is whole once
# its marker says finished), `finishing` (the new output is whole; the old folder is being deleted). The
# next run into the folder reads it first and finishes or undoes the switch.

def _plain_names(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(n, str) and n not in ("", ".", "..") and "/" not in n
                                       and os.sep not in n and "\x00" not in n for n in v)


def _read_journal(out: Path) -> dict | None:
    from audit.errors import ConfigError

    p = out / JOURNAL
    if not os.path.lexists(p):
        return None
    j = read_json_file(p)
    if not (isinstance(j, dict) and j.get("state") in _STATES and _plain_names(j.get("old"))
            and _plain_names(j.get("stay"))):
        raise ConfigError(f"`{p}` is not a journal that shortcut-audit wrote, so nothing in `{out}` was moved or "
                          f"deleted; if `{out / OLD}` holds an earlier output, move what you need out of it, then "
                          "delete both")
    if os.path.lexists(out / OLD) and not _lstat_is(out / OLD, stat.S_ISDIR):
        raise ConfigError(f"`{out / OLD}` is not a folder that shortcut-audit made (a link or a file); nothing was "
                          f"moved or deleted: delete it and `{p}`, then rerun")
    return j


def _set_aside(out: Path, entries: list[Path], command: str) -> dict:
    """Move the earlier output (and its marker) into OUT/.shortcut-audit-old, journaled."""
    moving = [p.name for p in entries] + ([MARKER] if os.path.lexists(out / MARKER) else [])
    stay = sorted(p.name for p in out.iterdir() if p.name not in moving and p.name not in BOOKKEEPING)
    journal = {"command": command, "state": "moving-aside", "old": moving, "stay": stay}
    write_json_atomic(out / JOURNAL, journal)
    (out / OLD).mkdir()
    for name in moving:
        os.rename(out / name, out / OLD / name)
    journal = {**journal, "state": "building"}
    write_json_atomic(out / JOURNAL, journal)
    return journal


def _roll_back(out: Path, journal: dict) -> None:
    """Undo a replacement: delete what the new run wrote (`building`), put the earlier output back."""
    from audit.errors import ConfigError

    if journal["state"] == "building":
        for p in sorted(out.iterdir()):
            if p.name not in journal["stay"] and p.name not in (LOCK_NAME, JOURNAL, OLD):
                _remove(p)
        journal = {**journal, "state": "restoring"}
        write_json_atomic(out / JOURNAL, journal)
    for name in journal["old"]:
        if os.path.lexists(out / OLD / name):
            if os.path.lexists(out / name):
                raise ConfigError(f"cannot put `{name}` back from `{out / OLD}`: `{out / name}` is in the way; move "
                                  "one of them, then rerun")
            os.rename(out / OLD / name, out / name)
    try:
        os.rmdir(out / OLD)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigError(f"`{out / OLD}` holds files that were not part of the earlier output ({e.strerror}); "
                          "move them out, delete it, then rerun") from None
    (out / JOURNAL).unlink()


def _finish(out: Path, journal: dict) -> None:
    """The new output is whole: delete the earlier one set aside."""
    write_json_atomic(out / JOURNAL, {**journal, "state": "finishing"})
    if os.path.lexists(out / OLD):
        _remove(out / OLD)
    (out / JOURNAL).unlink()


def _recover(out: Path) -> None:
    """Finish or undo a replacement that a kill interrupted, as its journal says, before anything else."""
    for p in out.iterdir():
        if _BOOKKEEPING_TMP.fullmatch(p.name) and regular_file(p):
            p.unlink()
    journal = _read_journal(out)
    if journal is None:
        return
    marker = read_marker(out)
    if journal["state"] == "finishing" or (journal["state"] == "building" and marker is not None
                                           and marker.get("state") == "finished"):
        log.warning("`%s`: an earlier `--overwrite` finished its new output but was stopped before it deleted the "
                    "output it replaced; that is deleted now", out)
        _finish(out, journal)
    else:
        log.warning("`%s`: an earlier `--overwrite` was stopped before its new output was complete; the output it "
                    "was replacing is restored", out)
        _roll_back(out, journal)


def _refuse_leftovers(out: Path) -> None:
    from audit.errors import ConfigError

    for name, what in ((LEGACY_ASIDE, "was left by an interrupted `--overwrite` of an earlier shortcut-audit version"),
                       (OLD, "is there without the journal that says what it holds")):
        if os.path.lexists(out / name):
            raise ConfigError(f"`{out / name}` {what}; it may hold an earlier output, so nothing was moved or "
                              "deleted: move what you need out of it, delete it, then rerun")


def _check_reads_outside(out: Path, reads: list[Path], command: str) -> None:
    """A folder the run reads (its source, the source's images) must not be the folder it replaces."""
    from audit.errors import ConfigError

    for r in reads:
        if r == out.resolve():
            raise ConfigError(f"`{command}` reads `{r}` (its input or the input's images), which is `-o {out}` "
                              "itself: `--overwrite` replaces that folder whole and would set the input aside before "
                              "reading it; keep the input and its images outside the output folder, or in a "
                              "subfolder of it (`--image-root` names where the images are)")


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def _decide(out: Path, command: str, entries: list[Path], prior: dict | None, overwrite: bool, resumable: bool,
            replace_own: bool, identity: dict | None) -> bool:
    """Whether the run replaces the folder's output (True), writes into a new or empty one, or continues its
    own (False); anything else is refused."""
    from audit.errors import ConfigError

    if not entries:
        return False
    shown = ", ".join(f"`{p.name}`" for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
    if prior is None:
        raise ConfigError(
            f"`-o {out}` is not empty ({shown}) and was not written by shortcut-audit (no `{MARKER}` in it); "
            "pass a new or empty folder. `--overwrite` only replaces a folder that shortcut-audit wrote, so "
            "it never deletes files of your own")
    same = prior["command"] == command
    if overwrite or (same and replace_own) or (same and not resumable and prior.get("state") != "finished"):
        return True
    if not (resumable and same):
        raise ConfigError(
            f"`-o {out}` already holds an earlier `{prior['command']}` output ({shown}); pass `--overwrite` "
            "to replace it whole (the earlier contents are deleted once the new run finishes), or another "
            "folder")
    was = prior.get("identity")
    if identity is not None and was != identity:
        what = ("its settings were not recorded" if not isinstance(was, dict) else "other " + ", ".join(
            f"`{k}` ({_short(was.get(k))} here, {_short(identity.get(k))} now)"
            for k in sorted(set(was) | set(identity)) if was.get(k) != identity.get(k)))
        raise ConfigError(f"`-o {out}` holds another `{command}` run ({what}); a rerun into its folder only resumes "
                          "the same run: pass `--overwrite` to replace it with this one, or another `-o`")
    return False


@contextlib.contextmanager
def claim_output(out: Path, command: str, inputs: list = (), *, overwrite: bool = False,
                 resumable: bool = False, replace_own: bool = False, holds: bool = True,
                 keep: tuple[str, ...] = (), reads: list = (), identity: dict | None = None) -> Iterator[None]:
    """Own the output folder `out` for one run of `command`.

    `out` must not be, or (with `holds`) contain, one of `inputs`. It may be new or empty. A folder the
    same command wrote before is continued when the command is `resumable` (score, train, bench and demo
    resume or update their own files; with `identity`, only a run of that identity is continued), or
    replaced with `replace_own` (a card), or when that run did not finish. Anything else is refused,
    unless `overwrite` and some shortcut-audit command wrote it (a folder of the user's own is never
    deleted). A replacement is journaled (see above): killed at any moment, the folder holds the earlier
    output or the new one whole, and the next run into it finishes or undoes the switch first.
    What stays in place through a replacement: `keep` (file names of the user's own work beside an
    output, e.g. an audit's tags) and every entry that is or holds one of `inputs` or `reads` (other
    paths the run reads, e.g. the source's images). The lock (`output_lock`) is held for the whole run;
    `OUT/.shortcut-audit.json` records the command and whether it finished."""
    check_output(out, list(inputs), command, holds)
    out = Path(out)
    read_paths = [Path(p).resolve() for p in [*inputs, *reads] if p is not None]
    with output_lock(out, command):
        _recover(out)
        _refuse_leftovers(out)
        entries = _own_entries(out, read_paths, keep)
        journal = None
        if _decide(out, command, entries, read_marker(out), overwrite, resumable, replace_own, identity):
            _check_reads_outside(out, read_paths, command)
            journal = _set_aside(out, entries, command)
        info = {"command": command, "state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "version": versions().get("shortcut-audit", "unknown"), **({"identity": identity} if identity else {})}
        write_json_atomic(out / MARKER, info)
        try:
            yield
        except BaseException:
            if journal is not None:
                _roll_back(out, journal)
            raise
        write_json_atomic(out / MARKER, {**info, "state": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if journal is not None:
            _finish(out, journal)


@contextlib.contextmanager
def output_lock(out: Path, command: str) -> Iterator[None]:
    """Hold `OUT/.shortcut-audit.lock` while a command writes into OUT: a second run into the same
    folder stops at once with a clear error instead of mixing its files with the first's."""
    from filelock import FileLock, Timeout

    from audit.errors import ConfigError

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    if os.path.lexists(path) and not regular_file(path):
        raise ConfigError(f"`{path}` is not a plain file (a link, a folder or a FIFO), and shortcut-audit locks "
                          f"`{out}` with that file; delete it, then rerun")
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another `{command}` is writing into `{out}` right now (lock `{lock.lock_file}`); "
                          "wait for it to finish, or pass another `-o`") from None
    except OSError as e:
        raise ConfigError(f"cannot lock `{out}` with `{path}` ({e.strerror or e}); check that the folder is "
                          "writable") from None
    try:
        yield
    finally:
        lock.release()
