"""TRL's DPOTrainer and RewardTrainer honour the `weight` column exactly: all-ones weights give the stock
trainer's loss and gradients bit for bit, weight 0 equals dropping a pair and weight 2 duplicating it,
gradient accumulation 1x16 equals 2x8, a tiny Llava (vision DPO) too; what cannot be weighted is refused,
and a TRL that skips the weight fails loudly. Tiny random models built from configs; nothing downloads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl", minversion="1.9.0")

import torch  # noqa: E402
import trl_fixtures as F  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer  # noqa: E402

from audit.errors import ConfigError, FormatError  # noqa: E402
from audit.train.trl_weights import (SKIPPED_TRL, TESTED_TRL, TRLChangedError, WeightedDPOTrainer,  # noqa: E402
                                     WeightedRewardTrainer, check_trl_version, check_weights)

N = 16
TOK = F.tokenizer()
DROP = np.array([0.0] + [N / (N - 1)] * (N - 1))             # mean 1: row 0 out, the rest as a mean over 15
DUPLICATE = np.array([2 * N / (N + 1)] + [N / (N + 1)] * (N - 1))   # mean 1: row 0 counted twice


def _config(kind: str, tmp_path, **kw):
    common = dict(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to="none",
                  per_device_train_batch_size=N, save_strategy="no", seed=0)
    return (RewardConfig if kind == "rm" else DPOConfig)(**{**common, **kw})


def _trainer(cls, kind: str, data: list[dict], tmp_path, model=None, **kw):
    ds = Dataset.from_list(data)
    if kind == "rm":
        model = model or F.qwen2(TOK, reward=True)
        return cls(model=model, args=_config(kind, tmp_path, **kw), train_dataset=ds, processing_class=TOK)
    if kind == "vlm":
        model, proc = F.llava(tmp_path / "llava")
        ref, _ = F.llava(tmp_path / "llava")
        return cls(model=model, ref_model=ref, args=_config(kind, tmp_path, max_length=None, **kw), train_dataset=ds,
                   processing_class=proc)
    return cls(model=model or F.qwen2(TOK), ref_model=F.qwen2(TOK), args=_config(kind, tmp_path, **kw),
               train_dataset=ds, processing_class=TOK)


def _loss_and_grads(trainer):
    """The loss of the whole prepared training set as one batch (through the trainer's own column removal
    and collator) and every parameter's gradient."""
    model = trainer.model.train()
    data = trainer._remove_unused_columns(trainer.train_dataset)
    batch = trainer.data_collator([data[i] for i in range(len(data))])
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _rows(kind: str, weight=None, n: int = N) -> list[dict]:
    return F.vision_rows(n, weight=weight) if kind == "vlm" else F.rows(n, weight=weight)


STOCK = {"rm": (RewardTrainer, WeightedRewardTrainer), "dpo": (DPOTrainer, WeightedDPOTrainer),
         "vlm": (DPOTrainer, WeightedDPOTrainer)}
CASES = {"rm": ("rm", {}), "rm-centre": ("rm", {"center_rewards_coefficient": 0.01}), "dpo": ("dpo", {}),
         "dpo-ipo": ("dpo", {"loss_type": ["ipo"]}), "dpo-wpo": ("dpo", {"use_weighting": True}),
         "dpo-precompute": ("dpo", {"precompute_ref_log_probs": True}), "vlm": ("vlm", {})}


@pytest.mark.parametrize("case", list(CASES))
def test_all_ones_is_the_stock_trainer_bit_for_bit(case, tmp_path):
    kind, kw = CASES[case]
    stock_cls, weighted_cls = STOCK[kind]
    loss_a, grads_a = _loss_and_grads(_trainer(stock_cls, kind, _rows(kind), tmp_path / "a", **kw))
    loss_b, grads_b = _loss_and_grads(_trainer(weighted_cls, kind, _rows(kind, np.ones(N)), tmp_path / "b", **kw))
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a) and grads_a.keys() == grads_b.keys()


@pytest.mark.parametrize("case", [c for c in CASES if c != "vlm"])
def test_weight_zero_drops_a_pair_and_weight_two_duplicates_it(case, tmp_path):
    kind, kw = CASES[case]
    stock_cls, weighted_cls = STOCK[kind]
    data = _rows(kind)
    _, full = _loss_and_grads(_trainer(stock_cls, kind, data, tmp_path / "full", **kw))
    _, dropped = _loss_and_grads(_trainer(stock_cls, kind, data[1:], tmp_path / "dropped", **kw))
    _, doubled = _loss_and_grads(_trainer(stock_cls, kind, data[:1] + data, tmp_path / "doubled", **kw))
    _, w_drop = _loss_and_grads(_trainer(weighted_cls, kind, _rows(kind, DROP), tmp_path / "w0", **kw))
    _, w_double = _loss_and_grads(_trainer(weighted_cls, kind, _rows(kind, DUPLICATE), tmp_path / "w2", **kw))
    assert _max_diff(w_drop, dropped) < 1e-6 and _max_diff(w_double, doubled) < 1e-6
    assert _max_diff(full, dropped) > 1e-4 and _max_diff(full, doubled) > 1e-4    # the checks can fail


def test_vision_dpo_zero_drops_and_two_duplicates(tmp_path):
    w = np.array([0.0, 2.0, 0.0, 2.0] + [1.0] * (N - 4))          # mean 1
    data = _rows("vlm")
    edited = [data[1], data[1], data[3], data[3]] + data[4:]
    _, changed = _loss_and_grads(_trainer(DPOTrainer, "vlm", edited, tmp_path / "stock"))
    _, weighted = _loss_and_grads(_trainer(WeightedDPOTrainer, "vlm", _rows("vlm", w), tmp_path / "weighted"))
    _, full = _loss_and_grads(_trainer(DPOTrainer, "vlm", data, tmp_path / "full"))
    assert _max_diff(weighted, changed) < 1e-6 and _max_diff(full, changed) > 1e-4
    assert any(k.startswith("model.vision_tower") for k in weighted)      # the picture gets its gradient too


def _one_sgd_step(kind: str, tmp_path, micro: int, accumulate: int) -> dict:
    w = np.random.default_rng(1).uniform(0.0, 2.0, N)
    w /= w.mean()
    trainer = _trainer(STOCK[kind][1], kind, _rows(kind, w), tmp_path,
                       **{"per_device_train_batch_size": micro, "gradient_accumulation_steps": accumulate,
                          "max_steps": 1, "optim": "sgd", "learning_rate": 1.0, "max_grad_norm": 0.0,
                          "lr_scheduler_type": "constant", "logging_steps": 1})
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert _max_diff(before, after) > 1e-3                                  # the step moved the model
    assert trainer.state.log_history[0]["weight/mean"] == pytest.approx(1.0, abs=0.35)
    return after


@pytest.mark.parametrize("kind", ["rm", "dpo"])
def test_gradient_accumulation_1x16_equals_2x8(kind, tmp_path):
    one = _one_sgd_step(kind, tmp_path / "one", micro=N, accumulate=1)
    two = _one_sgd_step(kind, tmp_path / "two", micro=N // 2, accumulate=2)
    assert _max_diff(one, two) < 1e-6


def test_aot_and_padding_free_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"`aot` and `aot_unpaired` sort the margins across the batch"):
        _trainer(WeightedDPOTrainer, "dpo", _rows("dpo", np.ones(N)), tmp_path, loss_type=["sigmoid", "aot"])
    with pytest.raises(ConfigError, match=r"`padding_free=True` packs pairs"):
        _trainer(WeightedDPOTrainer, "dpo", _rows("dpo", np.ones(N)), tmp_path, padding_free=True)


def test_weights_are_checked_and_renormalised_on_request(tmp_path):
    with pytest.raises(FormatError, match=r"^`weight` of the training set must be finite and not negative: row 2 "
                                          r"is -1.0 \(1 such rows\)"):
        check_weights([1.0, 1.0, -1.0, 3.0])
    with pytest.raises(FormatError, match="row 0 is nan"):
        check_weights([float("nan"), 1.0])
    with pytest.raises(FormatError, match="zero on every row"):
        check_weights([0.0, 0.0])
    assert np.array_equal(check_weights([0.5, 1.5]), [0.5, 1.5])
    with pytest.raises(FormatError, match=r"has mean 2, not 1 .* Pass `renormalise=True`"):
        _trainer(WeightedRewardTrainer, "rm", _rows("rm", 2 * np.ones(N)), tmp_path)
    trainer = WeightedRewardTrainer(model=F.qwen2(TOK, reward=True), args=_config("rm", tmp_path),
                                    train_dataset=Dataset.from_list(_rows("rm", np.arange(1, N + 1.0))),
                                    processing_class=TOK, renormalise=True)
    assert np.mean(trainer.train_dataset["weight"]) == pytest.approx(1.0)
    assert trainer.train_dataset["weight"][0] == pytest.approx(1 / 8.5)


def test_only_the_tested_trl_versions_run():
    assert check_trl_version() == __import__("trl").__version__
    lo, hi = TESTED_TRL
    for v in ("1.8.0", "1.16.1", "2.0.0"):
        with pytest.raises(ConfigError, match=rf"^trl {v} is installed; the weighted trainers were tested with trl "
                                              rf"{lo} to {hi} only"):
            check_trl_version(v)
    for v in SKIPPED_TRL:
        with pytest.raises(ConfigError, match=rf"^trl {v} is installed and was not tested: .* `pip install 'trl>={lo},"
                                              rf"<={hi},!={v}'`"):
            check_trl_version(v)


def test_a_trl_that_skips_the_policy_forward_fails_loudly(tmp_path, monkeypatch):
    """A TRL whose loss reaches the logits without the model's forward (as its old Liger path did) would
    leave the weight unapplied: the weighted trainer raises instead."""
    trainer = _trainer(WeightedDPOTrainer, "dpo", _rows("dpo", DROP), tmp_path)

    def backbone_only(self, model, inputs, return_outputs):
        core = self.accelerator.unwrap_model(model)
        hidden = core.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        return core.lm_head(hidden).logsumexp(-1).mean()

    monkeypatch.setattr(DPOTrainer, "_compute_loss", backbone_only)
    with pytest.raises(TRLChangedError, match="ran 0 times in one DPO micro-batch"):
        _loss_and_grads(trainer)


def test_a_trl_that_detaches_the_policy_output_fails_loudly(tmp_path, monkeypatch):
    trainer = _trainer(WeightedDPOTrainer, "dpo", _rows("dpo", DROP), tmp_path)
    original = DPOTrainer._compute_loss

    def detached(self, model, inputs, return_outputs):
        original(self, model, inputs, return_outputs)          # the forward the hook sees, then thrown away
        return sum(p.sum() for p in model.parameters()) * 0.0

    monkeypatch.setattr(DPOTrainer, "_compute_loss", detached)
    data = trainer._remove_unused_columns(trainer.train_dataset)
    batch = trainer.data_collator([data[i] for i in range(N)])
    trainer.current_gradient_accumulation_steps = 1          # what `train()` sets before its steps
    with pytest.raises(TRLChangedError, match="got no gradient in this step"):
        trainer.training_step(trainer.model, batch)


def test_a_changed_reward_formula_fails_loudly(tmp_path, monkeypatch):
    trainer = _trainer(WeightedRewardTrainer, "rm", _rows("rm", DROP), tmp_path)
    original = RewardTrainer.compute_loss

    def hinge(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, out = original(self, model, inputs, True)
        return (loss * 0.5, out) if return_outputs else loss * 0.5

    monkeypatch.setattr(RewardTrainer, "compute_loss", hinge)
    with pytest.raises(TRLChangedError, match="its formula changed"):
        _loss_and_grads(trainer)


def test_weighted_dpo_trains_and_logs_the_mean_weight(tmp_path):
    w = np.random.default_rng(0).uniform(0.0, 2.0, N)
    trainer = _trainer(WeightedDPOTrainer, "dpo", _rows("dpo", w / w.mean()), tmp_path,
                       per_device_train_batch_size=4, num_train_epochs=1, logging_steps=1, learning_rate=1e-2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == N // 4 and all(np.isfinite(h["loss"]) for h in logs)
    assert all("weight/mean" in h for h in logs)
    assert np.mean([h["weight/mean"] for h in logs]) == pytest.approx(1.0, abs=1e-5)   # every pair seen once
    metrics = trainer.evaluate(Dataset.from_list(_rows("dpo", w / w.mean())))         # evaluation: unweighted
    assert np.isfinite(metrics["eval_loss"])


def _export_folder(out, n: int = 16):
    """An `export --format trl` folder written by the writer `export` uses, with a `weight` column of mean 1."""
    import io

    from PIL import Image

    from audit.export import ExportPair
    from audit.sources.trl import TRL

    w = np.random.default_rng(2).uniform(0.0, 2.0, n)
    pairs = []
    for i, (r, v) in enumerate(zip(F.vision_rows(n), w / w.mean())):
        buf = io.BytesIO()
        r["images"][0].save(buf, format="PNG")
        pairs.append(ExportPair(sample_id=str(i), image_id=f"im{i}", ext="png", image_png=buf.getvalue(),
                                prompt=r["prompt"][0]["content"][1]["text"], chosen=r["chosen"][0]["content"][0]["text"],
                                rejected=r["rejected"][0]["content"][0]["text"], truth={"weight": float(v), "margin": None}))
    out.mkdir(parents=True)
    TRL().write(pairs, out, extra_spec={"weight": "float64", "margin": "float64"})
    return out


def test_train_trainer_trl_end_to_end_and_resume(tmp_path, capsys):
    from transformers import LlavaForConditionalGeneration

    from audit.cli import main

    data = _export_folder(tmp_path / "export")
    F.llava(tmp_path / "llava")
    args = ["train", str(data), "-o", str(tmp_path / "run"), "--trainer", "trl", "--model", str(tmp_path / "llava"),
            "--method", "weighted", "--batch-size", "8", "--micro-batch", "4", "--lr", "1e-3", "--warmup", "0"]
    assert main(args + ["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trained WeightedDPOTrainer (`weighted`) on 16 pairs, 2 steps in ") and "{" not in out
    assert main(args + ["--epochs", "2"]) == 0                             # the same run, one epoch more: resumes
    assert capsys.readouterr().out.startswith("resumed WeightedDPOTrainer (`weighted`) on 16 pairs, 4 steps in ")
    run = tmp_path / "run"
    logs = [__import__("json").loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in logs] == [1, 2, 3, 4] and all("weight/mean" in h for h in logs)
    summary = __import__("json").loads((run / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["versions"]["trl"]
    assert not (run / "model" / "training_args.bin").exists() and not (run / "cache").exists()
    model = LlavaForConditionalGeneration.from_pretrained(run / "model")
    start = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").state_dict()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], start[k])}
    assert changed and not any("vision_tower" in k for k in changed)       # the vision tower stays frozen


def test_train_trainer_trl_errors(tmp_path, capsys):
    from audit.cli import main

    data = _export_folder(tmp_path / "export", n=4)
    base = ["train", str(data), "-o", str(tmp_path / "run"), "--trainer", "trl"]
    assert main(base) == 1
    assert capsys.readouterr().err.startswith("Error: `--trainer trl` trains a Hugging Face model: pass `--model FOLDER`")
    (tmp_path / "m").mkdir()
    F.qwen2(TOK).save_pretrained(tmp_path / "m")
    TOK.save_pretrained(tmp_path / "m")
    assert main(base + ["--model", str(tmp_path / "m"), "--method", "shortcut-aware"]) == 1
    assert "runs `--method standard` or `weighted`" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "m"), "-o", str(tmp_path / "run2"), "--trainer", "trl", "--model",
                 str(tmp_path / "m")]) == 1
    assert capsys.readouterr().err.startswith(f"Error: `{tmp_path / 'm'}` holds no `export --format trl` dataset")
    assert main(base + ["--model", str(tmp_path / "m"), "--batch-size", "6", "--micro-batch", "4"]) == 1
    assert capsys.readouterr().err.strip() == ("Error: `--batch-size 6` must be a multiple of `--micro-batch` x "
                                               "processes (4 x 1) with `--trainer trl`")


def test_eval_refuses_a_trl_run(tmp_path, capsys):
    """`eval` would load a DPO policy as a reward model with a fresh head and report chance as a result."""
    from audit.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_summary.json").write_text('{"trainer": "trl"}')
    (run / "model").mkdir()
    (run / "model" / "config.json").write_text("{}")
    assert main(["eval", str(run), str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"Error: `{run}` was trained with `--trainer trl`: its `model/` is a TRL")
