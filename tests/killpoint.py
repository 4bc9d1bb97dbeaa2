"""Run the shortcut-audit CLI and SIGKILL it at its N-th filesystem change (a test helper, never imported
by the package): `python tests/killpoint.py N COUNT_FILE -- ARGS...`.

Every call that changes the file system (create, write-open, rename, delete, mkdir, chmod) counts as a
step; at step N the process kills itself with SIGKILL, as `kill -9` would, between two steps. N = 0
runs to the end and writes the number of steps taken to COUNT_FILE, so a test can try every N."""

from __future__ import annotations

import builtins
import io
import os
import signal
import sys


def install(kill_at: int) -> list[int]:
    count = [0]

    def step() -> None:
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def counted(f, changes=lambda *a, **k: True):
        def wrapper(*a, **k):
            if changes(*a, **k):
                step()
            return f(*a, **k)
        return wrapper

    for name in ("replace", "rename", "unlink", "remove", "rmdir", "mkdir", "chmod", "symlink", "link", "truncate"):
        setattr(os, name, counted(getattr(os, name)))
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    os.open = counted(os.open, lambda path, flags, *a, **k: bool(flags & writes))
    opening = lambda file, mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
    builtins.open = io.open = counted(builtins.open, opening)
    return count


def main() -> int:
    kill_at, count_file = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1:]
    count = install(kill_at)
    from audit.cli import main as cli

    try:
        return cli(args)
    finally:
        with open(count_file, "w") as fh:
            fh.write(str(count[0]))


if __name__ == "__main__":
    sys.exit(main())
