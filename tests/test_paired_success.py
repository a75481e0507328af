"""bench/paired_success.py: the exact McNemar test and the paired counts from two evals."""

import json

import paired_success as paired  # bench/ is on the tests' path (setup.cfg)
import pytest


def test_mcnemar_exact_on_hand_computed_values():
    assert paired.mcnemar_exact(0, 0) == 1.0
    assert paired.mcnemar_exact(3, 1) == pytest.approx(2 * 5 / 16)  # P(X <= 1), n = 4
    assert paired.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert paired.mcnemar_exact(2, 2) == 1.0  # clipped at 1


def test_paired_interval_is_the_mean_difference_interval_of_the_seeds():
    """From the two counts alone, the Wald interval of the per-seed differences (+1, -1, 0)."""
    import math

    import numpy as np

    for new_only, base_only, n in [(13, 11, 500), (63, 11, 500), (0, 5, 40), (7, 0, 200)]:
        d = np.r_[np.ones(new_only), -np.ones(base_only), np.zeros(n - new_only - base_only)]
        half = 1.959964 * d.std(ddof=1) / math.sqrt(n)
        assert paired.paired_interval(new_only, base_only, n) == pytest.approx([d.mean() - half, d.mean() + half])
    assert paired.paired_interval(0, 0, 100) == [0.0, 0.0]


def _eval(failed, first_seed=100, ci95=(0.0, 1.0)):
    return {"episodes": 10, "first_seed": first_seed,
            "details": {"full_tabletop": {"success": 1 - len(failed) / 10, "episodes": 10,
                                          "failed_seeds": failed, "ci95": list(ci95)}}}


def test_compare_counts_the_seeds_each_model_alone_solves(tmp_path):
    base, new = _eval([100, 101, 102]), _eval([102, 105])
    r = paired.compare(base, new)["full_tabletop"]
    assert (r["new_solves_base_fails"], r["base_solves_new_fails"]) == (2, 1)
    assert r["mcnemar_p"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="first_seed"):
        paired.compare(base, _eval([], first_seed=200))
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(new))
    assert paired.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                        "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["full_tabletop"]["new"] == 0.8
    assert paired.main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 2


def test_compare_says_whether_the_new_rate_lies_in_the_base_models_interval():
    """A second training run reproduces the first when its rate lies in the first's interval."""
    base = _eval([100, 101, 102], ci95=(0.4, 0.9))  # 70%
    assert paired.compare(base, _eval([102, 105]))["full_tabletop"]["new_within_base_ci95"]  # 80%
    assert not paired.compare(base, _eval([]))["full_tabletop"]["new_within_base_ci95"]  # 100%
    assert not paired.compare(base, _eval(list(range(100, 107))))["full_tabletop"]["new_within_base_ci95"]


def test_dataset_bc_seeds_averages_over_training_seeds_and_refuses_mixed_runs():
    """bench/dataset_bc_seeds.py: the mean paired difference over training seeds with its
    Student-t interval (hand-computed for three seeds), and pairs of different comparisons or a
    repeated seed are refused."""
    import dataset_bc_seeds

    base = {"world": "w", "episodes": 100, "bc_steps": 800, "eval_episodes": 500, "elastic_every": 2,
            "init_from": "new model", "expert_noise": "none", "dataset_frames": 7000}
    pairs = [{**base, "seed": s, "success_dataset": d, "success_expert": e}
             for s, d, e in [(0, 0.90, 0.80), (1, 0.70, 0.80), (2, 0.80, 0.80)]]
    out = dataset_bc_seeds.summarise(pairs, ["a", "b", "c"])
    # differences +10, -10, 0: mean 0, sd 10, t(0.975, 2) = 4.3027 -> +-24.8
    assert out["mean_difference_points"] == 0.0
    assert out["difference_ci95_points"] == pytest.approx([-24.8, 24.8], abs=0.05)
    assert out["within_5_points"] is False and out["mean_expert"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="bc_steps"):
        dataset_bc_seeds.summarise([pairs[0], {**pairs[1], "bc_steps": 2000}], ["a", "b"])
    with pytest.raises(ValueError, match="repeat"):
        dataset_bc_seeds.summarise([pairs[0], pairs[0]], ["a", "b"])
