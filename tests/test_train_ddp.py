"""Two processes (torchrun, gloo on CPU) take the same steps as one process on the same global batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from audit.config import ScoreConfig, SynthConfig, TrainConfig
from audit.score import score
from audit.synth import synth
from audit.train.loop import BIAS_CHECKPOINT, CHECKPOINT, load_model, train

SMALL = ["--epochs", "2", "--batch-size", "16", "--dim", "16", "--image-size", "32", "--vocab", "512", "--lr", "5e-3", "--warmup", "3", "--vision-scenes", "300"]


@pytest.mark.parametrize("method", ["weighted", "shortcut-aware"])
def test_two_processes_match_one(tmp_path, method):
    src = synth(SynthConfig(env="leadin", out=tmp_path / "src", n=70, format="rlaif-v", image_size=32))
    score(ScoreConfig(source=src.parent, out=tmp_path / "audit", cache_dir=tmp_path / "cache"))
    train(TrainConfig(data=tmp_path / "audit", out=tmp_path / "one", method=method, epochs=2, batch_size=16, dim=16,
                      image_size=32, vocab=512, lr=5e-3, warmup=3, vision_scenes=300))
    # 70 pairs, batches of 16: the last global batch (6 pairs) splits unevenly across the two ranks.
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "audit", "train", str(tmp_path / "audit"), "-o", str(tmp_path / "two"),
                          "--method", method, *SMALL], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    assert json.loads((tmp_path / "two" / "train_summary.json").read_text())["world_size"] == 2   # really two
    assert json.loads((tmp_path / "one" / "train_summary.json").read_text())["world_size"] == 1
    for ckpt in [CHECKPOINT] + ([BIAS_CHECKPOINT] if method == "shortcut-aware" else []):
        a = load_model(tmp_path / "one" / ckpt).state_dict()
        b = load_model(tmp_path / "two" / ckpt).state_dict()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
