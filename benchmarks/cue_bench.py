"""Speed of the hand-written cue features (`audit.probes.cues.cue_values`), and the same values from
two code trees.

    python benchmarks/cue_bench.py [--trees OLD_TREE NEW_TREE] [--n 20000] [--rounds 3]

With one tree (default: this checkout) it reports texts/s. With two (e.g. `git worktree add /tmp/old
HEAD~1`), each round runs each tree in its own process, alternating, so machine noise hits both alike;
it reports the median texts/s of each, their ratio, and whether both trees computed the same values
(bit for bit) on the timed corpus and on a Unicode-heavy one (Turkish dotted / dotless i, long s,
Kelvin sign, Greek sigma, ligatures, curly quotes, CJK, emoji, citation markers).

The timed corpus has response lengths like the real preference sets (8-40 words a sentence, 1-6
sentences, a fifth with a lead-in); a prompt is shared by 40 responses, as in VLFeedback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = r'''
import json, random, sys, time
from pathlib import Path
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path.insert(0, sys.argv[1])
import numpy as np
import audit
assert Path(audit.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), audit.__file__
from audit.probes.cues import cue_values

n, out = int(sys.argv[2]), Path(sys.argv[3])
rng = random.Random(0)
vocab = ("the a red blue green square circle triangle image shows picture there are three two objects visible "
         "in on left right I think maybe perhaps it seems sure great question hope this helps let me know "
         "of course I'm sorry").split()
sent = lambda k: " ".join(rng.choice(vocab) for _ in range(k))
prompts = [sent(12) + "?" for _ in range(max(1, n // 40))]
texts = [("Certainly! " if rng.random() < 0.2 else "") + ". ".join(sent(rng.randint(8, 40)) for _ in range(rng.randint(1, 6)))
         for _ in range(n)]
ps = [prompts[i % len(prompts)] for i in range(n)]
t = time.perf_counter()
timed = cue_values(texts, ps)
seconds = time.perf_counter() - t

alpha = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ  \n.,!?'-*#`_0123456789") + \
    list("\u0130\u0131\u017f\u212a\ufb00\u00df\u03a3\u03c3\u03c2\u00c9\u00e9\u00c4\u00e4\u0141\u0142\u2019\u2014\u2013"
         "\u201c\u201d\u3010\u3011\u2020\U0001f600\u4e2d\u6587\u01c5\u01c6\ufb01\u0307")
phrases = ["I think", "I'M SORRY", "Great question!", "Certainly", "hope this helps", "Let me know", "IMAGE",
           "\u0130mage", "\u017fcene", "I can't", "As an AI", "MAYBE", "appears to", "my", "I've", "**bold**", "- item",
           "1. x", "\u30103\u2020source\u3011", "Picture", "vis\u0131ble"]
rng = random.Random(1)
odd_t, odd_p = [], []
for _ in range(20000):
    parts = [rng.choice(phrases) if rng.random() < 0.4 else "".join(rng.choice(alpha) for _ in range(rng.randint(1, 9)))
             for _ in range(rng.randint(0, 12))]
    odd_t.append(rng.choice([" ", "\n", ". "]).join(parts))
    odd_p.append("".join(rng.choice(alpha) for _ in range(rng.randint(0, 30))))
odd = cue_values(odd_t, odd_p)
np.savez(out, timed=timed, odd=odd)
print(json.dumps({"seconds": seconds, "texts_per_s": n / seconds}))
'''


def run_tree(tree: Path, n: int, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", RUN, str(tree), str(n), str(out)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{tree}: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", nargs="+", type=Path, default=[Path(__file__).resolve().parents[1]])
    ap.add_argument("--n", type=int, default=20000, help="responses in the timed corpus")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import numpy as np

    speeds: dict[str, list[float]] = {str(t): [] for t in args.trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, tree in enumerate(args.trees):
                speeds[str(tree)].append(run_tree(tree, args.n, Path(tmp) / f"{i}.npz")["texts_per_s"])
        values = [np.load(Path(tmp) / f"{i}.npz") for i in range(len(args.trees))]
        same = {k: all(np.array_equal(values[0][k], v[k]) for v in values[1:]) for k in ("timed", "odd")}
    med = {t: statistics.median(s) for t, s in speeds.items()}
    for t, s in speeds.items():
        print(f"{t}: median {med[t]:,.0f} texts/s (rounds: {', '.join(f'{x:,.0f}' for x in s)})")
    if len(args.trees) > 1:
        first, last = (str(t) for t in (args.trees[0], args.trees[-1]))
        print(f"ratio last / first: {med[last] / med[first]:.2f}x; same values: timed corpus {same['timed']}, "
              f"Unicode corpus {same['odd']}")


if __name__ == "__main__":
    main()
