"""The training recipe (config/train/default.yaml): it is TrainConfig's defaults, it is found by
name, and it runs end to end through `embodied-stack train --recipe default` at a tiny scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embodied_stack.sim.train.config import SCALED_FIELDS, TrainConfig, read_yaml, recipe_path, scaled

REPO = Path(__file__).resolve().parents[1]


def test_trainer_defaults_are_the_default_recipe():
    recipe = TrainConfig.from_yaml(recipe_path("default"))
    defaults = TrainConfig()
    differ = {f: (getattr(recipe, f), getattr(defaults, f)) for f in recipe.__dataclass_fields__
              if getattr(recipe, f) != getattr(defaults, f)}
    assert not differ, f"config/train/default.yaml and TrainConfig's defaults differ: {differ}"


def test_default_recipe_trains_a_new_model_with_the_shipped_architecture():
    from embodied_stack.models.policy import DEFAULT_MODEL_DIR
    from embodied_stack.models.policy.elastic_vla import ElasticVLAConfig

    recipe = read_yaml(recipe_path("default"))
    assert recipe["init_from"] == "", "the recipe must not warm-start from another run"
    assert not recipe.get("dagger_from"), "the recipe must not import another run's data"
    shipped = ElasticVLAConfig.load(DEFAULT_MODEL_DIR / "config.json")
    for key, value in recipe["model"].items():
        assert getattr(shipped, key) == value, (key, getattr(shipped, key), value)


def test_robust_recipe_trains_at_least_as_wide_as_every_shift_the_bench_tests():
    """config/train/robust.yaml draws each magnitude per episode up to its value: every shift of
    bench/robustness.py must lie inside that range (a policy is not judged on what it never saw
    the like of), and its instructions are paraphrased."""
    import dataclasses

    sys.path.insert(0, str(REPO / "bench"))
    from robustness import CELLS

    from embodied_stack.sim.worlds.shift import Shift

    cfg = TrainConfig.from_yaml(recipe_path("robust"))
    train = Shift.from_option(cfg.shift)
    assert train is not None and train.ranges and cfg.paraphrase_share > 0
    for cell, (_, _, option) in CELLS.items():
        if option in ("none", "paraphrase"):
            continue
        tested = Shift.from_option(option)
        for f in dataclasses.fields(Shift):
            value, limit = getattr(tested, f.name), getattr(train, f.name)
            if f.name == "light_scale":
                assert min(limit, 1 / limit) <= value <= max(limit, 1 / limit), (cell, value, limit)
            elif f.name != "ranges":
                assert abs(value) <= abs(limit), (cell, f.name, value, limit)


def test_robust_recipe_is_the_default_model_plus_the_sentence_embedding_and_the_effector():
    """The robust recipe's model is the default recipe's, reading the instruction's sentence
    embedding too (words outside the vocabulary keep their meaning) and finding the end
    effector as well as the target (their offset survives a camera move)."""
    default, robust = (read_yaml(recipe_path(name))["model"] for name in ("default", "robust"))
    assert robust == {**default, "instruction_embedding": True, "effector_keypoint": True}


def test_recipe_lookup_errors_name_the_known_recipes(tmp_path):
    with pytest.raises(ValueError, match=r"recipe 'nope' not found; known recipes: \[.*'default'"):
        recipe_path("nope")
    with pytest.raises(ValueError, match="no such file"):
        recipe_path(str(tmp_path / "missing.yaml"))
    mine = tmp_path / "mine.yaml"
    mine.write_text("bc_steps: 7\n")
    assert TrainConfig.from_yaml(recipe_path(str(mine))).bc_steps == 7


def test_scaled_shrinks_every_amount_of_work_and_keeps_the_rest():
    recipe = read_yaml(recipe_path("default"))
    small = scaled(recipe, 0.01)
    cfg, full = TrainConfig.from_dict(small), TrainConfig.from_dict(recipe)
    for name in SCALED_FIELDS:
        value, big = getattr(cfg, name), getattr(full, name)
        if isinstance(value, dict):
            assert all(1 <= value[k] <= max(1, big[k]) for k in big), (name, value)
        else:
            assert 1 <= value <= max(1, big), (name, value)
    assert cfg.bc_steps == 40 and full.bc_steps == 4000
    for name in recipe:
        if name not in SCALED_FIELDS:
            assert getattr(cfg, name) == getattr(full, name), name
    assert scaled(recipe, 1.0) == recipe
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match=rf"scale={bad} must be in \(0, 1\]"):
            scaled(recipe, bad)


@pytest.mark.slow
def test_recipe_runs_at_a_tiny_scale_through_the_training_command(tmp_path):
    """What CI runs: the default recipe, every stage, the real model size, 1% of the
    work, through the command a user types."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "embodied_stack.nodes.cli", "train", "--recipe", "default",
           "--scale", "0.01", "--out", str(out), "--threads", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((out / "train_config.json").read_text())
    expected = TrainConfig.from_dict({**scaled(read_yaml(recipe_path("default")), 0.01),
                                      "threads": 2})
    assert TrainConfig.from_dict(saved) == expected
    info = json.loads((out / "run_info.json").read_text())
    assert info["command"].startswith("embodied-stack train --recipe default --scale 0.01")
    assert info["wall_s"] > 0 and info["finished"]
    from embodied_stack.models.policy import load_default_policy

    model = load_default_policy(out / "model")
    assert model.config.reference_frame and model.config.target_keypoint
    for stage in ("bc", "dagger", "rl"):
        assert (out / f"model_after_{stage}" / "model.safetensors").is_file(), stage
    # The bench that judges a run against the shipped model on validation seeds reads it.
    judged = tmp_path / "judged.json"
    bench = subprocess.run([sys.executable, "bench/recipe_run.py", "--run", str(out), "--episodes", "2",
                            "--cache", str(tmp_path / "cache"), "--json", str(judged)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-3000:]
    figures = json.loads(judged.read_text())
    assert {"final", "after_bc", "after_dagger", "baseline", "final_vs_baseline"} <= set(figures)
    assert "after_rl" not in figures  # (the last stage's model is the final one)
    assert figures["first_seed"] == 300_000 and figures["run_info"]["wall_s"] == info["wall_s"]
    assert figures["final_vs_baseline"]["full_tabletop"]["episodes"] == 2
    base, final = figures["baseline"], figures["final"]
    for key, paired in figures["final_vs_baseline"].items():
        low, high = base[f"ci95_{key}"]
        assert paired["new_within_base_ci95"] == (low <= final[f"success_{key}"] <= high), key
    assert {"full_tabletop", "full_driving"} <= set(figures["final_vs_baseline"])
    # Shipping a run: the model folder with its card, every figure of it read from its files.
    to = tmp_path / "shipped"
    export = subprocess.run([sys.executable, "-m", "embodied_stack.sim.train.export", "--run", str(out),
                             "--to", str(to), "--episodes", "2"], capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_config.json", "eval.json",
                 "curves.png", "training_log.json", "run_info.json", "README.md"):
        assert (to / name).is_file(), name
    card, ev = (to / "README.md").read_text(), json.loads((to / "eval.json").read_text())
    assert ev["episodes"] == 2 and info["command"] in card and "## How it was trained" in card
    assert f"| full | tabletop | {ev['success_full_tabletop']:.0%} |" in card
    # Runs side by side from their logs (bench/run_logs.py): this run's validations and losses.
    logs = tmp_path / "logs.json"
    read = subprocess.run([sys.executable, "bench/run_logs.py", str(out), "--steps", "1", "1000000",
                           "--json", str(logs)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr[-3000:]
    run = json.loads(logs.read_text())["run"]
    assert run["progress"]["stage"] == "done" and run["run_info"]["command"] == info["command"]
    assert {e["stage"] for e in run["validation"]} == {"bc", "dagger", "rl"}
    assert run["at_1"]["global_step"] < run["at_1000000"]["global_step"] <= run["progress"]["global_step"]
    missing = subprocess.run([sys.executable, "bench/run_logs.py", str(tmp_path / "bad")], cwd=REPO,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no checkpoint.pt" in missing.stderr
    # Resuming a finished run trains nothing more and keeps its weights and wall time.
    weights = (out / "model" / "model.safetensors").read_bytes()
    again = subprocess.run([sys.executable, "-m", "embodied_stack.nodes.cli", "train", "--out",
                            str(out), "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "bc:" not in again.stderr and "demos" not in again.stderr
    assert (out / "model" / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "run_info.json").read_text())["wall_s"] == info["wall_s"]
    # Bad input: a clear error, nothing written.
    bad = subprocess.run([sys.executable, "-m", "embodied_stack.nodes.cli", "train", "--recipe",
                          "nope", "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert bad.returncode == 2 and "known recipes" in bad.stderr
    assert not (tmp_path / "bad").exists()
