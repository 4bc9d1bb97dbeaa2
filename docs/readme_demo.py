"""The README's demo block is the demo's output: this script writes it from a fresh run, or checks it.

    python docs/readme_demo.py            # run `shortcut-audit demo` in a temporary folder, rewrite the block
    python docs/readme_demo.py --check    # run it and compare (timings masked); exit 1 with a diff if they differ

The demo runs in an empty temporary folder with its default `-o shortcut-audit-demo`, so its paths read
as a user's would; the one absolute path it prints starts with /path/to. The block is the text between
BEGIN and END in README.md; CI (`.ci/run`) runs the check on every change, right after the install.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- demo output: written by `python docs/readme_demo.py`; change the demo, not this block -->"
END = "<!-- end of the demo output -->"
PLACEHOLDER = "/path/to"
TIMING = re.compile(r"\b\d+(?:\.\d+)?s\b")      # "0.8s", "in 1.0s": the only numbers that may differ


def run_demo(env: dict[str, str] | None = None) -> str:
    """What `shortcut-audit demo` prints, run offline in a fresh temporary folder shown as /path/to."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-m", "audit", "demo"], cwd=tmp, env=env, capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise RuntimeError(f"`shortcut-audit demo` failed with exit code {res.returncode}:\n{res.stderr[-4000:]}")
        out = res.stdout
        for path in {str(Path(tmp).resolve()), str(Path(tmp))}:
            out = out.replace(path, PLACEHOLDER)
        return out


def _split(readme: str) -> tuple[str, str, str]:
    """(before the block, the block, after it)."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"README.md needs one demo block: a line `{BEGIN}`, the output, then a line `{END}`")
    head, rest = readme.split(BEGIN + "\n", 1)
    block, tail = rest.split(END, 1)
    return head, block, tail


def block_of(readme: str) -> str:
    """The demo block as it stands in the README (its code fence included)."""
    return _split(readme)[1]


def as_block(output: str) -> str:
    return "```text\n" + output.rstrip("\n") + "\n```\n"


def with_block(readme: str, output: str) -> str:
    """The README with its demo block replaced by `output`."""
    head, _, tail = _split(readme)
    return f"{head}{BEGIN}\n{as_block(output)}{END}{tail}"


def masked(text: str) -> str:
    return TIMING.sub("<t>s", text)


def difference(readme: str, output: str) -> str:
    """A unified diff of the README's block against `output`, timings masked; empty when they agree."""
    old, new = masked(block_of(readme)).splitlines(), masked(as_block(output)).splitlines()
    return "\n".join(difflib.unified_diff(old, new, "README.md (demo block)", "shortcut-audit demo", lineterm=""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare the README's block with a fresh run; write nothing")
    ap.add_argument("--readme", type=Path, default=README, help="the README to check or rewrite")
    args = ap.parse_args(argv)
    readme = args.readme.read_text(encoding="utf-8")
    output = run_demo()
    if args.check:
        diff = difference(readme, output)
        if diff:
            print(diff)
            print("the README's demo block is not what the demo prints: run `python docs/readme_demo.py`",
                  file=sys.stderr)
        return 1 if diff else 0
    tmp = args.readme.with_name(args.readme.name + ".tmp")
    tmp.write_text(with_block(readme, output), encoding="utf-8")
    os.replace(tmp, args.readme)
    print(f"wrote the demo block of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
