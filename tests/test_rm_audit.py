"""`score --rm`: auditing a vision-language reward model with its image and a blank white image.

Tiny randomly initialised Qwen2-VL and Llava reward models are built from configs and saved to a temp
folder with tokenizer, image processor and head (`audit.tiny`), then loaded by path as a user's
model would be. Inputs are built by hand (Qwen2VLProcessor needs torchvision)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from audit.config import ScoreConfig
from audit.score import score
from audit.tiny import tiny_llava, tiny_qwen2_vl
from audit.vlm import BLANK_SIZE, VLMRewardModel, blank_image


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rms")
    return {"qwen2_vl": tiny_qwen2_vl(d / "qwen"), "llava": tiny_llava(d / "llava")}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from audit.config import SynthConfig
    from audit.synth import synth

    out = tmp_path_factory.mktemp("src") / "pairs"
    synth(SynthConfig(env="leadin", n=40, seed=3, out=out))
    return out


def _blind(path, tmp):
    """The same model with its image path cut: the vision features are multiplied by zero before they
    enter the language model, so the reward cannot depend on the image."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    out = tmp / (path.name + "-blind")
    shutil.copytree(path, out)
    w = load_file(str(out / "model.safetensors"))
    for k in w:
        if ("multi_modal_projector" in k or "merger.mlp.2" in k) and (k.endswith("weight") or k.endswith("bias")):
            w[k] = torch.zeros_like(w[k])
    save_file(w, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_blank_image_is_the_reference_white_224():
    im = blank_image()
    assert im.size == (BLANK_SIZE, BLANK_SIZE) == (224, 224) and im.mode == "RGB"
    assert np.asarray(im).min() == 255


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_reward_is_read_at_the_last_real_token_whatever_the_batch(models, family):
    from PIL import Image

    rm = VLMRewardModel(models[family])
    assert rm.head_source == "reward_head.safetensors"
    text = rm.render("what colour is the square?", "it is red")
    assert text.count(rm.image_token) == 1 and "it is red" in text
    ims = [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (90, 60), "blue"), blank_image()]
    prompts = ["what colour is the square?", "how many objects?", "what is in the picture?"]
    responses = ["it is red", "there are two objects in the top left corner of the picture", "a star"]
    together = rm.rewards(prompts, responses, ims)
    alone = np.array([rm.rewards([p], [r], [i])[0] for p, r, i in zip(prompts, responses, ims)])
    assert np.allclose(together, alone, atol=1e-4)             # right padding does not move the reward
    ids = rm.encode(prompts[0], responses[0], rm.process_images(ims[:1]), 0)
    assert ids.count(rm.image_token_id) == rm.family.n_image_tokens(rm.config, rm.process_images(ims[:1]), 0)
    assert abs(rm.n_tokens(prompts[0], responses[0], (64, 64)) - len(ids)) <= 1


def test_head_is_found_under_common_names_or_refused(models, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from audit.errors import ConfigError

    src = models["llava"]
    d = tmp_path / "v_head"
    shutil.copytree(src, d)
    head = load_file(str(d / "reward_head.safetensors"))
    (d / "reward_head.safetensors").unlink()
    with pytest.raises(ConfigError, match="no reward head"):
        VLMRewardModel(d)
    w = load_file(str(d / "model.safetensors"))
    w["v_head.summary.weight"], w["v_head.summary.bias"] = head["weight"], torch.tensor([0.5])
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    rm = VLMRewardModel(d)
    assert rm.head_source.endswith("v_head.summary") and float(rm.head.bias.detach()) == 0.5


def _score(pairs, out, **kw):
    return score(ScoreConfig(source=pairs, out=out, device="cpu", folds=3, workers=0, **kw))


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_rm_audit_writes_margins_flips_and_summary(models, pairs, tmp_path, family):
    s = _score(pairs, tmp_path / "aud", rm=str(models[family]))
    t = pl.read_parquet(tmp_path / "aud" / "audited.parquet")
    assert t.height == pl.read_parquet(pairs / "pairs.parquet").height        # rows in = rows out
    for c in ("rm_margin", "rm_blank_margin", "rm_flip"):
        assert c in t.columns
    ok = t.filter(pl.col("status") == "ok")
    assert ok["rm_margin"].null_count() == 0 and np.allclose(ok["mm_margin"], ok["rm_margin"])
    flip = (ok["rm_margin"].to_numpy() > 0) != (ok["rm_blank_margin"].to_numpy() > 0)
    assert (ok["rm_flip"].to_numpy() == flip).all()
    r = s["rm"]
    assert r["flip_rate"] == pytest.approx(flip.mean())
    assert r["acc"] == pytest.approx(float((ok["rm_margin"].to_numpy() > 0).mean()))
    assert r["blank_acc"] == pytest.approx(float((ok["rm_blank_margin"].to_numpy() > 0).mean()))
    assert r["blank_image"] == "white 224x224 RGB" and s["encoders"]["mm"] == "reward model"
    assert "sfd_vs_text" in r and r["batches"] >= 1


@pytest.mark.parametrize("family,blank", [("qwen2_vl", "match"), ("llava", "reference"), ("llava", "match")])
def test_a_model_that_ignores_the_image_never_flips(models, pairs, tmp_path, family, blank):
    """(Qwen2-VL's vision-token count follows the image size, so only a blank of the image's own size
    leaves an image-blind Qwen2-VL's input unchanged; Llava always sees a fixed-size crop.)"""
    blind = _blind(models[family], tmp_path)
    s = _score(pairs, tmp_path / "aud", rm=str(blind), rm_blank=blank)
    ok = pl.read_parquet(tmp_path / "aud" / "audited.parquet").filter(pl.col("status") == "ok")
    assert s["rm"]["flip_rate"] == 0.0 and not ok["rm_flip"].any()
    assert np.allclose(ok["rm_margin"], ok["rm_blank_margin"], atol=1e-5)
    assert s["rm"]["acc"] == s["rm"]["blank_acc"]


def test_a_train_run_folder_is_an_rm_too(pairs, tmp_path):
    from audit.config import TrainConfig
    from audit.train.loop import train

    train(TrainConfig(data=pairs, out=tmp_path / "run", epochs=1, seed=0, vision="scratch"))
    s = _score(pairs, tmp_path / "aud", rm=str(tmp_path / "run"))
    assert s["rm"]["head"] == "model.safetensors" and 0.0 <= s["rm"]["flip_rate"] <= 1.0


def test_rm_scores_resume_after_a_crash_with_identical_output(models, pairs, tmp_path, monkeypatch):
    from audit.probes import reward_model

    ref_dir = tmp_path / "ref"
    _score(pairs, ref_dir, rm=str(models["qwen2_vl"]), chunk=40)
    real, calls = reward_model.score_items, {"n": 0}

    def crash_on_third(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(reward_model, "score_items", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _score(pairs, tmp_path / "aud", rm=str(models["qwen2_vl"]), chunk=40)
    assert not (tmp_path / "aud" / "audited.parquet").exists()
    monkeypatch.setattr(reward_model, "score_items", real)
    s = _score(pairs, tmp_path / "aud", rm=str(models["qwen2_vl"]), chunk=40)
    assert s["rm"]["batches"] < json.loads((ref_dir / "summary.json").read_text())["rm"]["batches"]  # only the rest
    assert pl.read_parquet(tmp_path / "aud" / "audited.parquet").equals(pl.read_parquet(ref_dir / "audited.parquet"))


def test_two_processes_give_the_single_process_output(models, pairs, tmp_path):
    """`torchrun --standalone --nproc_per_node 2` (gloo): each rank scores its chunks; rank 0 merges."""
    args = [str(pairs), "--rm", str(models["qwen2_vl"]), "--device", "cpu", "--folds", "3", "--workers", "0",
            "--chunk", "40"]
    one = subprocess.run([sys.executable, "-m", "audit", "score", *args, "-o", str(tmp_path / "one")],
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "audit", "score", *args, "-o", str(tmp_path / "two")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert pl.read_parquet(tmp_path / "one" / "audited.parquet").equals(
        pl.read_parquet(tmp_path / "two" / "audited.parquet"))
    s = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s["world_size"] == 2
    writers = {p.name.split(".")[0].rsplit("-", 1)[1] for p in (tmp_path / "two" / "cache").glob("rm-*/part-*.keys.npy")}
    assert len(writers) == 2                                     # both ranks scored a share
    assert sum(line.startswith("reward model ") for line in two.stdout.splitlines()) == 1   # rank 0 alone reports


def test_dataloader_workers_give_the_same_scores(models, pairs, tmp_path):
    a = _score(pairs, tmp_path / "a", rm=str(models["llava"]), token_budget=256)
    b = score(ScoreConfig(source=pairs, out=tmp_path / "b", device="cpu", folds=3, workers=2, token_budget=256,
                          rm=str(models["llava"])))
    assert a["rm"]["batches"] == b["rm"]["batches"] > 4
    assert pl.read_parquet(tmp_path / "a" / "audited.parquet").equals(pl.read_parquet(tmp_path / "b" / "audited.parquet"))


def test_compiled_rm_gives_the_eager_scores(models, pairs, tmp_path):
    """`--compile`: torch.compile on the language model (inductor on CPU here) changes the speed, not
    the rewards; the summary says it ran compiled."""
    eager = _score(pairs, tmp_path / "eager", rm=str(models["llava"]))
    comp = _score(pairs, tmp_path / "comp", rm=str(models["llava"]), compile=True)
    assert comp["rm"]["compiled"] and not eager["rm"]["compiled"]
    a, b = (pl.read_parquet(tmp_path / d / "audited.parquet").filter(pl.col("status") == "ok") for d in ("eager", "comp"))
    for c in ("rm_margin", "rm_blank_margin"):
        assert np.allclose(a[c].to_numpy(), b[c].to_numpy(), atol=1e-4), c
