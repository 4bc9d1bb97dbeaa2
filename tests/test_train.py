"""The training loop on tiny data: loss finite and falling, parameters change, weights behave, the
shortcut-aware text branch trains, checkpoints score with the multimodal branch alone, resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audit.config import EvalConfig, ScoreConfig, SynthConfig, TrainConfig
from audit.eval import eval_run
from audit.score import score
from audit.synth import synth
from audit.train.data import load_pairs
from audit.train.loop import BIAS_CHECKPOINT, CHECKPOINT, load_model, margins, train

SMALL = dict(epochs=3, batch_size=16, dim=16, image_size=32, vocab=512, lr=5e-3, vision="scratch", warmup=0)


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    src = synth(SynthConfig(env="leadin", out=root / "src", n=96, format="rlaif-v", image_size=32))
    score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache"))
    return root / "audit"


@pytest.mark.parametrize("method", ["standard", "weighted", "shortcut-aware"])
def test_loss_falls_and_checkpoint_scores_alone(audit_dir, tmp_path, method):
    s = train(TrainConfig(data=audit_dir, out=tmp_path / "run", method=method, **SMALL))
    losses = [h["loss"] for h in s["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    model = load_model(tmp_path / "run" / CHECKPOINT)          # the multimodal branch, alone
    data = load_pairs(audit_dir, 32, 512)
    m = margins(model, data)
    assert np.isfinite(m).all() and 0.0 <= float((m > 0).mean()) <= 1.0
    # The saved model is the in-memory one: re-scoring the checkpoint twice gives the same margins.
    assert np.array_equal(m, margins(load_model(tmp_path / "run" / CHECKPOINT), data))
    assert (tmp_path / "run" / BIAS_CHECKPOINT).exists() == (method == "shortcut-aware")
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == SMALL["epochs"]
    if method == "shortcut-aware":
        assert 0.0 < s["history"][-1]["mean_weight"] < 1.0
        assert "cue_share" in s["history"][-1]


def test_parameters_change_and_the_text_branch_trains(audit_dir, tmp_path):
    torch.manual_seed(0)
    train(TrainConfig(data=audit_dir, out=tmp_path / "run", method="shortcut-aware", **{**SMALL, "epochs": 1}))
    from audit.train.models import SmallMMRM

    torch.manual_seed(0)
    init_main = SmallMMRM(512, 16, 32).state_dict()
    init_bias = SmallMMRM(512, 16, 32).state_dict()
    main, bias = load_model(tmp_path / "run" / CHECKPOINT), load_model(tmp_path / "run" / BIAS_CHECKPOINT)
    assert any(not torch.equal(init_main[k], v) for k, v in main.state_dict().items())
    assert any(not torch.equal(init_bias[k], v) for k, v in bias.state_dict().items())


def test_weighted_uses_the_audit_weights_or_a_scheme(audit_dir, tmp_path):
    s = train(TrainConfig(data=audit_dir, out=tmp_path / "a", method="weighted", **{**SMALL, "epochs": 1}))
    assert s["history"][0]["mean_weight"] == pytest.approx(1.0, abs=1e-5)   # audit weights have mean 1
    s = train(TrainConfig(data=audit_dir, out=tmp_path / "b", method="weighted", scheme="ipw", **{**SMALL, "epochs": 1}))
    # ipw moves effective weight off the cue-aligned pairs (the audit measured ~0.5 on this data)
    assert s["history"][0]["cue_share"] < 0.75


def test_resume_continues_to_the_same_result(audit_dir, tmp_path):
    train(TrainConfig(data=audit_dir, out=tmp_path / "straight", **SMALL))
    train(TrainConfig(data=audit_dir, out=tmp_path / "resumed", **{**SMALL, "epochs": 2}))
    s = train(TrainConfig(data=audit_dir, out=tmp_path / "resumed", **SMALL))       # picks up at epoch 2
    a = load_model(tmp_path / "straight" / CHECKPOINT).state_dict()
    b = load_model(tmp_path / "resumed" / CHECKPOINT).state_dict()
    assert all(torch.allclose(a[k], b[k]) for k in a)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    epoch_s = [json.loads(x)["seconds"] for x in lines]
    assert all(t > 0 for t in epoch_s)                       # the epochs run before the interruption count too
    assert s["train_seconds"] == pytest.approx(sum(epoch_s), abs=2e-3) and s["train_seconds"] > epoch_s[-1]


def test_eval_writes_json_and_markdown(audit_dir, tmp_path):
    train(TrainConfig(data=audit_dir, out=tmp_path / "run", **{**SMALL, "epochs": 1}))
    res = eval_run(EvalConfig(run=tmp_path / "run", data=[audit_dir], out=tmp_path / "res.json"))
    r = res["datasets"]["audit"]
    assert r["n"] == 96 and 0.0 <= r["accuracy"] <= 1.0 and "acc_cue_aligned" in r and "sfd" in r
    assert json.loads((tmp_path / "res.json").read_text())["datasets"]["audit"]["n"] == 96
    assert (tmp_path / "res.md").read_text().startswith("| dataset | split | n | accuracy |")
    # the training data is never called i.i.d.: it is reported as seen in training
    assert r["split"] == "train" and r["seen_in_training"] == 96
    assert res["iid"] is None and res["mean_ood"] is None
    assert "| audit | train | 96 |" in (tmp_path / "res.md").read_text()


def test_eval_splits_iid_and_ood_and_reads_external_scores(audit_dir, tmp_path):
    import polars as pl

    from audit.errors import ConfigError

    train(TrainConfig(data=audit_dir, out=tmp_path / "run", **{**SMALL, "epochs": 1}))
    clean = synth(SynthConfig(env="clean", out=tmp_path / "clean", n=40, format="pairs", image_size=32)).parent
    held = synth(SynthConfig(env="leadin", out=tmp_path / "lead", n=40, holdout=30, seed=7, format="pairs",
                            image_size=32))
    heldout = tmp_path / "lead" / "heldout"
    assert held.parent == tmp_path / "lead" / "train" and (heldout / "pairs.parquet").is_file()
    res = eval_run(EvalConfig(run=tmp_path / "run", data=[audit_dir, heldout, clean], iid="heldout",
                              out=tmp_path / "r.json"))
    assert res["iid"]["dataset"] == "heldout" and res["datasets"]["audit"]["split"] == "train"
    assert res["mean_ood"] == res["datasets"]["clean"]["accuracy"]          # the training data is left out
    assert res["gap"] == pytest.approx(res["datasets"]["heldout"]["accuracy"] - res["datasets"]["clean"]["accuracy"])
    assert "| clean | o.o.d. | 40 |" in (tmp_path / "r.md").read_text()
    # `--iid` naming the training data, or a copy of it in another folder, is refused
    with pytest.raises(ConfigError, match="training data"):
        eval_run(EvalConfig(run=tmp_path / "run", data=[audit_dir, clean], iid="audit"))
    import shutil

    shutil.copytree(audit_dir / "pairs", tmp_path / "copy")
    with pytest.raises(ConfigError, match="96 of its 96 pairs are the run's own training data"):
        eval_run(EvalConfig(run=tmp_path / "run", data=[tmp_path / "copy", clean], iid="copy"))
    # an external RM's rewards as columns: a column pair that always prefers chosen scores 100%
    t = pl.read_parquet(audit_dir / "audited.parquet")
    ext = tmp_path / "ext"
    ext.mkdir()
    t.with_columns(pl.lit(1.0).alias("r_c"), pl.lit(0.0).alias("r_r"), pl.col("text_margin").alias("copycat"),
                   pl.lit(0.0).alias("zero")).write_parquet(ext / "audited.parquet")
    (ext / "summary.json").write_text((audit_dir / "summary.json").read_text())
    res = eval_run(EvalConfig(run=ext, data=[], scores="r_c,r_r", out=tmp_path / "ext.json"))
    r = res["datasets"]["ext"]
    assert res["run"] is None and r["accuracy"] == 1.0
    ok = t.filter(pl.col("status") == "ok")
    assert r["acc_text_right"] == r["acc_text_wrong"] == 1.0 and r["n_text_wrong"] == (ok["text_margin"] < 0).sum() > 0
    # a reward model that copies the audit's text-only model: right where the text is, wrong on the pairs that
    # need the picture (text-wrong), SFD 100
    r = eval_run(EvalConfig(run=ext, data=[], scores="copycat,zero"))["datasets"]["ext"]
    assert (r["acc_text_right"], r["acc_text_wrong"], r["sfd"]) == (1.0, 0.0, 100.0)
    assert "| ext | – | 96 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 0.000 |" in (tmp_path / "ext.md").read_text()
    with pytest.raises(ConfigError, match="no trained model"):
        EvalConfig(run=clean, data=[clean])


def test_pretrained_vision_is_loaded_frozen_and_cached(audit_dir, tmp_path):
    from audit.train.vision import pretrained_encoder

    kw = {**SMALL, "vision": "pretrained", "vision_scenes": 300, "cache_dir": tmp_path / "cache", "epochs": 1}
    s = train(TrainConfig(data=audit_dir, out=tmp_path / "run", method="shortcut-aware", **kw))
    rep = s["vision"]
    assert rep["scenes"] == 300 and {"present", "shape", "colour"} <= set(rep)
    assert rep["present"] > 0.9          # even 300 scenes teach "is there an object in this quadrant"
    state, again = pretrained_encoder(32, 300, cache=tmp_path / "cache")   # cached: same file, same report
    assert again == rep and len(list((tmp_path / "cache").glob("scene-encoder-*.safetensors"))) == 1
    for ckpt in (CHECKPOINT, BIAS_CHECKPOINT):        # frozen: both branches keep the pretrained encoder
        vis = load_model(tmp_path / "run" / ckpt).vision.state_dict()
        assert all(torch.equal(vis[k], state[k]) for k in state)
    s2 = train(TrainConfig(data=audit_dir, out=tmp_path / "tuned", **{**kw, "train_vision": True}))
    assert s2["vision"] == rep
    vis = load_model(tmp_path / "tuned" / CHECKPOINT).vision.state_dict()
    assert any(not torch.equal(vis[k], state[k]) for k in state)


def test_pretraining_is_deterministic():
    from audit.train.vision import pretrain

    a, ra = pretrain(32, n_scenes=200, epochs=1, seed=3)
    b, rb = pretrain(32, n_scenes=200, epochs=1, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a) and {k: ra[k] for k in ("shape", "colour")} == {k: rb[k] for k in ("shape", "colour")}


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_a_vlm_backbone_trains_with_its_vision_tower_frozen(audit_dir, tmp_path, family):
    """`--model FOLDER`: a tiny random Qwen2-VL / Llava, both branches of the shortcut-aware loss; the
    saved `model/` folder is what `score --rm` loads and it gives the in-memory model's rewards."""
    from audit.tiny import tiny_llava, tiny_qwen2_vl
    from audit.train.loop import HF_BIAS_CHECKPOINT, HF_CHECKPOINT, checkpoint
    from audit.train.vlm_rm import VLMTrainRM, vision_tower
    from audit.vlm import VLMRewardModel

    base = (tiny_qwen2_vl if family == "qwen2_vl" else tiny_llava)(tmp_path / "base")
    init = VLMTrainRM(base)
    s = train(TrainConfig(data=audit_dir, out=tmp_path / "run", model=str(base), method="shortcut-aware", epochs=2,
                          batch_size=32, image_size=32, lr=1e-3, warmup=0))
    losses = [h["loss"] for h in s["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert checkpoint(tmp_path / "run") == tmp_path / "run" / HF_CHECKPOINT
    assert (tmp_path / "run" / HF_BIAS_CHECKPOINT / "reward_head.safetensors").is_file()
    model = load_model(checkpoint(tmp_path / "run"))
    before, after = init.body.state_dict(), model.body.state_dict()
    tower = {f"{n}" for n, _ in vision_tower(init.body).named_parameters()}
    prefix = next(n for n in ("visual", "vision_tower") if hasattr(init.body, n)) + "."
    assert all(torch.equal(before[prefix + k], after[prefix + k]) for k in tower)                   # frozen
    assert any(not torch.equal(before[k], v) for k, v in after.items() if not k.startswith(prefix))  # the rest trained
    assert not torch.equal(init.head.weight, model.head.weight)
    data = load_pairs(audit_dir, 32, 4096)
    m = margins(model, data, batch=32)
    rm = VLMRewardModel(tmp_path / "run" / HF_CHECKPOINT)       # what `score --rm RUN/model` loads
    t = data.table
    imgs = data.native_images(list(range(8)))
    direct = rm.rewards(t["prompt"][:8].to_list(), t["chosen"][:8].to_list(), imgs) - \
        rm.rewards(t["prompt"][:8].to_list(), t["rejected"][:8].to_list(), imgs)
    assert np.allclose(m[:8], direct, atol=1e-4)


def test_micro_batches_accumulate_into_the_same_step(audit_dir, tmp_path):
    """`--micro-batch`: a step over micro-batches of 5 pairs is the step over the whole batch (to float
    rounding), for every method, so a large backbone can take the paper's batch in small pieces."""
    for method in ("standard", "shortcut-aware"):
        a = train(TrainConfig(data=audit_dir, out=tmp_path / f"{method}-whole", method=method, **SMALL))
        b = train(TrainConfig(data=audit_dir, out=tmp_path / f"{method}-micro", method=method, micro_batch=5, **SMALL))
        for x, y in zip(a["history"], b["history"]):
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-4) and x["ess"] == pytest.approx(y["ess"], rel=1e-4)
        ma, mb = (load_model(tmp_path / f"{method}-{k}" / CHECKPOINT).state_dict() for k in ("whole", "micro"))
        assert all(torch.allclose(ma[k], mb[k], atol=1e-4) for k in ma)


def test_bf16_training_of_a_vlm_keeps_fp32_master_weights_and_checkpointing_the_gradients(audit_dir, tmp_path):
    """`--precision bf16`: the forward runs under bf16 autocast while the weights and AdamW state stay fp32,
    so an update far below bf16's resolution (2^-8 of the weight) is kept; `--grad-checkpointing`
    recomputes activations and gives the same gradients."""
    from audit.tiny import tiny_qwen2_vl
    from audit.train.loop import loss_terms
    from audit.train.vlm_rm import VLMTrainRM

    base = tiny_qwen2_vl(tmp_path / "base")
    model = VLMTrainRM(base, bf16=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    data = load_pairs(audit_dir, 32, 4096)
    idx = torch.arange(8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    per_pair, *_ = loss_terms("standard", model, None, data, idx, None)
    per_pair.mean().backward()
    opt.step()
    after = model.state_dict()
    kept = 0
    for k in before:            # updates smaller than half of bf16's spacing at the weight: a bf16 weight
        w, delta = before[k].float(), (after[k] - before[k]).float().abs()     # would round them away
        half_ulp = torch.exp2(torch.floor(torch.log2(w.abs().clamp_min(1e-30))) - 8)
        kept += int(((delta > 0) & (delta < half_ulp) & (w.abs() > 1e-3)).sum())
    assert kept > 1000

    def grads(ckpt: bool) -> dict:
        m = VLMTrainRM(base, grad_checkpointing=ckpt)
        m.train()
        per, *_ = loss_terms("standard", m, None, data, idx, None)
        per.mean().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and all(torch.allclose(plain[k], ckpt[k], atol=1e-5) for k in plain)


def test_a_vlm_gets_each_image_at_its_own_resolution(audit_dir, tmp_path):
    """The small model's images are resized to `--image-size`; a VLM's are the files themselves (its
    processor resizes them as the model expects), except where the pairs lived in a temporary folder."""
    data = load_pairs(audit_dir, 16, 512)
    assert tuple(data.images.shape[-2:]) == (16, 16)
    assert {im.size for im in data.native_images([0, 1, 2])} == {(32, 32)}       # synth wrote 32 x 32
    src = next(p for p in (audit_dir.parent / "src").iterdir() if p.suffix == ".parquet")
    raw = load_pairs(src, 16, 512)                # a raw source: ingested into a temporary folder, gone after
    assert raw.image_files is None and {im.size for im in raw.native_images([0])} == {(16, 16)}


def test_eval_on_a_raw_source_gives_a_vlm_the_pictures_at_their_own_size(audit_dir, tmp_path, monkeypatch):
    """`eval RUN SOURCE` ingests a raw source into a temporary folder that lives as long as the
    evaluation, so a VLM's processor gets the files themselves, not the small model's square copies
    (which `native_images` falls back on when the files are gone)."""
    import audit.eval as ev

    train(TrainConfig(data=audit_dir, out=tmp_path / "run", **{**SMALL, "epochs": 1}))
    seen, real = {}, ev.margins

    def spy(model, pd, *args, **kwargs):
        seen["files"] = pd.image_files is not None and all(f.is_file() for f in pd.image_files)
        seen["sizes"] = {im.size for im in pd.native_images([0, 1])}
        return real(model, pd, *args, **kwargs)

    monkeypatch.setattr(ev, "margins", spy)
    src = next(p for p in (audit_dir.parent / "src").iterdir() if p.suffix == ".parquet")
    report = ev.evaluate(tmp_path / "run", src)
    assert seen["files"] and seen["sizes"] == {(32, 32)} and report["n"] > 0
