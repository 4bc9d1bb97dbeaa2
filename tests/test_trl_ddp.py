"""Two processes under `torchrun` (gloo on CPU), each 4 pairs x 2 accumulation steps, take the weighted
TRL step that one process takes on the 16 pairs at once (DPO and reward)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", minversion="1.9.0")

WORKER = Path(__file__).with_name("trl_ddp_worker.py")


def test_two_processes_match_one(tmp_path):
    from safetensors import safe_open

    from trl_ddp_worker import main

    (tmp_path / "one").mkdir()
    main(str(tmp_path / "one"), "16", "1")
    (tmp_path / "two").mkdir()
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(WORKER), str(tmp_path / "two"), "4", "2"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for kind in ("dpo", "rm"):
        with safe_open(str(tmp_path / "one" / f"{kind}.safetensors"), "pt") as a, \
                safe_open(str(tmp_path / "two" / f"{kind}.safetensors"), "pt") as b:
            assert a.metadata()["world_size"] == "1" and b.metadata()["world_size"] == "2"   # really two
            assert sorted(a.keys()) == sorted(b.keys())
            diff = max(float((a.get_tensor(k) - b.get_tensor(k)).abs().max()) for k in a.keys())
            assert diff < 1e-6, (kind, diff)
