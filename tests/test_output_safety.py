"""Output folders never lose data: `--overwrite` killed at any moment leaves the old output or the new
one whole, only what shortcut-audit wrote inside `-o` is ever moved or deleted, and inputs or the
user's own files inside an output folder stay where they are."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audit.cli import main

KILLPOINT = Path(__file__).with_name("killpoint.py")
BOOKKEEPING = (".shortcut-audit.json", ".shortcut-audit.lock")


def _tree(d: Path) -> dict[str, bytes]:
    """Every file and link under `d` (relative path -> bytes or link target), the marker and lock left
    out; any other leftover (a set-aside folder, a journal, a temporary file) shows."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file() and rel not in BOOKKEEPING:
            out[rel] = p.read_bytes()
    return out


def _run(args: list[str], kill_at: int, count_file: Path) -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(KILLPOINT), str(kill_at), str(count_file), "--", *args],
                          env=env, capture_output=True, cwd=Path(__file__).parent.parent).returncode


def _synth(out: Path, seed: int) -> list[str]:
    return ["synth", "--env", "leadin", "--n", "3", "--format", "vlfeedback", "--seed", str(seed), "-o", str(out)]


def test_overwrite_killed_at_every_step_leaves_the_old_or_the_new_output_whole(tmp_path):
    """kill -9 at each filesystem change of `synth --overwrite`, then a plain rerun (which refuses, after
    it has put the folder in order): the folder holds the earlier output or the new one, byte for byte,
    never a mix, never nothing. Some runs are killed twice (the recovery itself killed too)."""
    u, cnt = tmp_path / "u", tmp_path / "count"
    assert main(_synth(tmp_path / "new", 2)) == 0
    assert main(_synth(u, 1)) == 0
    old, new = _tree(u), _tree(tmp_path / "new")
    assert old and new and old != new
    shutil.copytree(u, tmp_path / "old", symlinks=True)
    assert _run([*_synth(u, 2), "--overwrite"], 0, cnt) == 0 and _tree(u) == new
    steps = int(cnt.read_text())
    assert steps > 10
    rng = random.Random(0)
    seen = {"old": 0, "new": 0}
    for n in range(1, steps + 1):
        shutil.rmtree(u)
        shutil.copytree(tmp_path / "old", u, symlinks=True)
        assert _run([*_synth(u, 2), "--overwrite"], n, cnt) == -9, f"step {n} of {steps} was not reached"
        if n % 4 == 0:        # killed again while the next run recovers or replaces
            _run([*_synth(u, 2), "--overwrite"], rng.randint(1, 12), cnt)
        assert _run(_synth(u, 2), 0, cnt) == 1            # refuses (the folder holds an output), after recovery
        tree = _tree(u)
        assert tree in (old, new), (f"killed at step {n} of {steps}: the folder holds neither output whole: "
                                    f"{sorted(tree)}")
        seen["old" if tree == old else "new"] += 1
        marker = json.loads((u / ".shortcut-audit.json").read_text())
        assert marker["command"] == "synth" and marker["state"] == "finished"
    assert seen["old"] and seen["new"]


def _cli_error(capsys, args) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), err   # one line, no traceback
    return err[0]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".shortcut-audit.lock"}


@pytest.fixture
def source(tmp_path):
    from conftest import png_bytes, write_jsonl

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.png").write_bytes(png_bytes())
    rows = [{"prompt": f"What is shown {i}?", "chosen": "A red square.", "rejected": "A blue circle.", "image": "a.png"}
            for i in range(3)]
    return write_jsonl(tmp_path / "src" / "d.jsonl", rows)


def test_a_leftover_set_aside_folder_in_a_folder_of_ones_own_deletes_nothing(tmp_path, source, capsys):
    """An earlier version set an output aside in `.shortcut-audit-replaced`; one left in a user's folder
    (no marker) made a plain ingest delete the user's files and move the leftover's in."""
    mine = tmp_path / "mine"
    (mine / ".shortcut-audit-replaced").mkdir(parents=True)
    (mine / ".shortcut-audit-replaced" / "theirs.txt").write_text("aside")
    (mine / "notes.txt").write_text("keep me")
    before = _files(mine)
    for extra in ([], ["--overwrite"]):
        err = _cli_error(capsys, ["ingest", str(source), "-o", str(mine), *extra])
        assert ".shortcut-audit-replaced` was left by an interrupted `--overwrite`" in err
        assert "nothing was moved or deleted" in err
        assert _files(mine) == before


def test_overwrite_never_follows_a_link_out_of_the_output_folder(tmp_path, source, capsys):
    """A set-aside folder (or any entry) that is a link to a folder outside `-o`: its files used to be
    moved in and deleted. Links are moved and removed as links; what they point to is never touched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    out = tmp_path / "o"
    assert main(["ingest", str(source), "-o", str(out)]) == 0
    (out / ".shortcut-audit-replaced").symlink_to(outside, target_is_directory=True)
    err = _cli_error(capsys, ["ingest", str(source), "-o", str(out), "--overwrite"])
    assert "nothing was moved or deleted" in err
    (out / ".shortcut-audit-replaced").unlink()
    (out / "link").symlink_to(outside, target_is_directory=True)     # part of the earlier output: replaced
    assert main(["ingest", str(source), "-o", str(out), "--overwrite"]) == 0
    assert not os.path.lexists(out / "link")
    assert _files(outside) == {"precious.txt": b"mine"}


def test_a_journal_or_old_folder_that_is_not_ours_is_never_acted_on(tmp_path, source, capsys):
    from audit.io import JOURNAL, OLD

    out = tmp_path / "o"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    assert main(["ingest", str(source), "-o", str(out)]) == 0
    before = _files(out)
    forged = [json.dumps({"state": "building", "old": ["../outside"], "stay": []}),     # a path, not a name
              json.dumps({"state": "building", "old": [], "stay": []}),                 # its old folder is a link
              "not a journal", '{"a": ' * 5000 + "1" + "}" * 5000]                      # nested past the parser
    for journal in forged:
        (out / JOURNAL).write_text(journal)
        if '"old": []' in journal:
            (out / OLD).symlink_to(outside, target_is_directory=True)
        err = _cli_error(capsys, ["ingest", str(source), "-o", str(out), "--overwrite"])
        assert "nothing was moved or deleted" in err or "nothing in" in err
        assert _files(outside) == {"precious.txt": b"mine"}
        (out / JOURNAL).unlink()
        if os.path.lexists(out / OLD):
            (out / OLD).unlink()
    (out / OLD).mkdir()                           # an old folder without a journal: not ours to delete
    (out / OLD / "x.txt").write_text("x")
    err = _cli_error(capsys, ["ingest", str(source), "-o", str(out), "--overwrite"])
    assert "without the journal" in err and (out / OLD / "x.txt").read_text() == "x"
    shutil.rmtree(out / OLD)
    assert _files(out) == before


def test_a_fifo_marker_or_a_linked_lock_is_one_error_line_not_a_hang(tmp_path, source):
    """A FIFO named as the marker used to block every command on reading it; a lock file that is a link
    gave a traceback."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    os.mkfifo(out / ".shortcut-audit.json")
    args = [sys.executable, "-m", "audit.cli", "ingest", str(source), "-o", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and r.stderr.startswith(f"Error: `-o {out}` is not empty (`notes.txt`)"), r.stderr
    os.unlink(out / ".shortcut-audit.json")
    os.unlink(out / "notes.txt")
    os.unlink(out / ".shortcut-audit.lock")
    (out / ".shortcut-audit.lock").symlink_to(tmp_path / "elsewhere")
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"Error: `{out / '.shortcut-audit.lock'}` is not a plain file")
    assert not (tmp_path / "elsewhere").exists()


def test_checkpoints_and_the_cached_scene_encoder_get_the_mode_of_any_new_file(tmp_path):
    """safetensors makes its file anew, 0600: a model shared with a group (or served) was unreadable."""
    from audit.train.loop import save_model
    from audit.train.models import SmallMMRM
    from audit.train.vision import pretrained_encoder

    mask = os.umask(0o022)
    try:
        save_model(SmallMMRM(64, 8, 16, "scratch"), tmp_path / "model.safetensors")
        pretrained_encoder(16, n_scenes=100, epochs=1, cache=tmp_path / "cache")
    finally:
        os.umask(mask)
    made = [tmp_path / "model.safetensors", *(tmp_path / "cache").iterdir()]
    assert len(made) == 2 and all(p.stat().st_mode & 0o777 == 0o644 for p in made), made


def test_a_rescore_keeps_its_inputs_the_tags_and_the_apps_files_inside_the_audit(tmp_path, capsys):
    """`score SRC -o T --overwrite` with SRC (or its images) inside T set them aside before reading them
    and deleted them at the end; the app's exports and saved selections went with the old audit."""
    t = tmp_path / "t"
    assert main(["synth", "--env", "leadin", "--n", "40", "--format", "alignrm", "-o", str(tmp_path / "s")]) == 0
    shutil.copytree(tmp_path / "s", t / "src", ignore=shutil.ignore_patterns(".shortcut-audit*"))
    score = ["--folds", "2", "--cache-dir", str(tmp_path / "cache"), "--text-probe", "lexical"]
    assert main(["score", str(t / "src"), "-o", str(t), *score]) == 0
    mine = {"tags.parquet": b"tags", "app_exports/e1/pairs.parquet": b"export", "app_selections/s1.json": b"{}"}
    for name, data in mine.items():
        (t / name).parent.mkdir(parents=True, exist_ok=True)
        (t / name).write_bytes(data)
    src = _files(t / "src")
    assert main(["score", str(t / "src"), "-o", str(t), "--overwrite", *score]) == 0
    assert _files(t / "src") == src
    assert all((t / name).read_bytes() == data for name, data in mine.items())
    import polars as pl

    assert set(pl.read_parquet(t / "audited.parquet")["status"]) == {"ok"}     # its images were there to read
    # The source file at the top of T: its images are looked up in T itself, which --overwrite replaces.
    for p in (t / "src").iterdir():
        shutil.move(p, t / p.name)
    before = _files(t)
    capsys.readouterr()
    err = _cli_error(capsys, ["score", str(t / "alignrm_pairs.jsonl"), "-o", str(t), "--overwrite", "--text-only",
                              *score])
    assert f"which is `-o {t}` itself" in err and "keep the input and its images outside" in err
    assert _files(t) == before


def test_eval_never_replaces_a_markdown_file_of_the_users_beside_its_results(tmp_path):
    """`eval -o m.json` protected m.json but silently replaced the user's m.md beside it."""
    from audit.config import EvalConfig
    from audit.errors import ConfigError
    from audit.eval import markdown

    (tmp_path / "m.md").write_text("# my notes\n")
    os.mkfifo(tmp_path / "f.md")
    for name in ("m", "f"):
        with pytest.raises(ConfigError, match=rf"`{tmp_path / name}.md` exists and is not an earlier `eval` table"):
            EvalConfig(run=None, data=[tmp_path], scores="m", out=tmp_path / f"{name}.json")
    assert (tmp_path / "m.md").read_text() == "# my notes\n"
    (tmp_path / "r.md").write_text(markdown({"datasets": {"d": {"n": 3, "accuracy": 0.5}}}))
    EvalConfig(run=None, data=[tmp_path], scores="m", out=tmp_path / "r.json")    # an earlier eval's table: replaced


# ---- runs that never claim what they did not do ------------------------------------------------

TINY = ["--image-size", "32", "--dim", "8", "--vocab", "64", "--epochs", "2", "--vision", "scratch",
        "--batch-size", "16"]


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    for name, seed in (("a", 0), ("b", 1)):
        assert main(["synth", "--env", "leadin", "--n", "40", "--image-size", "32", "--seed", str(seed),
                     "-o", str(root / name)]) == 0
    assert main(["score", str(root / "a"), "-o", str(root / "audit"), "--folds", "2", "--text-probe", "lexical",
                 "--cache-dir", str(root / "cache")]) == 0          # an audit: `--method weighted` has its weights
    return root / "audit", root / "b"


def test_train_into_another_runs_folder_is_refused_not_reported_as_trained(two_sets, tmp_path, capsys):
    """`train A -o r1 --method weighted` into a finished `standard` run printed "trained `weighted`" and
    left the model byte-identical. A rerun into a run's folder continues that run only."""
    a, b = two_sets
    run = tmp_path / "r1"
    assert main(["train", str(a), "-o", str(run), *TINY]) == 0
    model = (run / "model.safetensors").read_bytes()
    err = _cli_error(capsys, ["train", str(a), "-o", str(run), "--method", "weighted", *TINY])
    assert err.startswith(f"Error: `-o {run}` holds another `train` run (other `method` (\"standard\" here, "
                          "\"weighted\" now)); a rerun into its folder only resumes the same run: pass `--overwrite`")
    err = _cli_error(capsys, ["train", str(b), "-o", str(run), *TINY])
    assert "holds another `train` run (other `data` (" in err
    assert (run / "model.safetensors").read_bytes() == model
    assert json.loads((run / "train_summary.json").read_text())["method"] == "standard"
    assert main(["train", str(a), "-o", str(run), *TINY]) == 0                    # the same run: nothing to do
    assert f"`{run}` already held this run trained for 2 epochs: nothing left to train" in capsys.readouterr().out
    assert (run / "model.safetensors").read_bytes() == model
    assert main(["train", str(a), "-o", str(run), "--method", "shortcut-aware", "--overwrite", *TINY]) == 0
    assert capsys.readouterr().out.startswith("trained `shortcut-aware` on 40 pairs for 2 epochs")
    assert (run / "model.safetensors").read_bytes() != model and (run / "bias_model.safetensors").is_file()


@pytest.mark.parametrize("edit, says", [
    ({"epoch": -4}, "does not say which epochs ran (epoch '-4'"),
    ({"history": [{"epoch": 1, "loss": "x"}, 7]}, "does not say which epochs ran"),
    ({"epoch": 9, "history": [{"epoch": i + 1, "loss": 0.5, "mean_weight": 1, "train_acc": 0.5, "ess": 1,
                               "seconds": 0.1} for i in range(9)]}, "trained for 9 epochs, more than `--epochs 2`"),
])
def test_a_hand_edited_training_state_is_one_error_line(two_sets, tmp_path, capsys, edit, says):
    """`trainer_state.pt` with `epoch=-4` ran 6 epochs more than asked; a garbage history crashed."""
    import torch

    run = tmp_path / "r"
    assert main(["train", str(two_sets[0]), "-o", str(run), *TINY]) == 0
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    torch.save({**state, **edit}, run / "trainer_state.pt")
    capsys.readouterr()
    err = _cli_error(capsys, ["train", str(two_sets[0]), "-o", str(run), *TINY])
    assert says in err and "--overwrite" in err


def test_export_into_the_audit_folder_is_refused_but_under_app_exports(two_sets, tmp_path, capsys):
    """`export AUDIT -o AUDIT/pairs` was accepted when the audit scored a pairs folder elsewhere: the
    next rescore ingests into AUDIT/pairs (or replaces the folder), and the export is gone."""
    audit = tmp_path / "audit"
    shutil.copytree(two_sets[0], audit, symlinks=True)
    shutil.rmtree(audit / "pairs")             # the copy's pairs table is the one its summary names, elsewhere
    summary = json.loads((two_sets[0] / "summary.json").read_text())
    assert Path(summary["pairs_dir"]).is_dir()
    for inside in (audit / "pairs", audit / "exports" / "w"):
        err = _cli_error(capsys, ["export", str(audit), "-o", str(inside)])
        assert err.startswith(f"Error: `-o {inside}` is inside the audit folder `{audit}`, whose files a rescore "
                              "replaces")
        assert not inside.exists()
    assert main(["export", str(audit), "-o", str(audit / "app_exports" / "w")]) == 0


def test_ingest_overwrite_never_sets_aside_the_images_it_reads(tmp_path, source, capsys):
    """`ingest d.jsonl --image-root O -o O --overwrite` moved the images aside before reading them and
    deleted them with the earlier output."""
    out = tmp_path / "o"
    assert main(["ingest", str(source), "-o", str(out)]) == 0
    shutil.copy(source.parent / "a.png", out / "a.png")
    before = _files(out)
    capsys.readouterr()
    err = _cli_error(capsys, ["ingest", str(source), "--image-root", str(out), "-o", str(out), "--overwrite"])
    assert f"which is `-o {out}` itself" in err
    assert _files(out) == before
