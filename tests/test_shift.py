"""The worlds' randomisation (sim/worlds/shift.py), the eval's paraphrases (sim/eval.py) and the
robustness bench's pairing (bench/robustness.py): real MuJoCo, a few steps each."""

import math

import numpy as np
import pytest
import robustness  # bench/ is on the tests' path (setup.cfg)

from embodied_stack.sim.eval import Paraphraser
from embodied_stack.sim.worlds import driving, tabletop
from embodied_stack.sim.worlds.base import INSTRUCTION_CHARSET, INSTRUCTION_MAX_LEN
from embodied_stack.sim.worlds.driving import DrivingEnv
from embodied_stack.sim.worlds.shift import LIMITS, Shift
from embodied_stack.sim.worlds.tabletop import TabletopEnv

WORLDS = {"tabletop": TabletopEnv, "driving": DrivingEnv}
EVERYTHING = dict(camera_offset_m=0.05, camera_rotation_deg=5, fov_deg=3, light_scale=0.5,
                  light_direction_deg=20, light_color=0.2, surface_color=0.2, object_color=0.1,
                  distractors=2, depth_noise=True, rgb_noise=4, blur_px=0.7, exposure_ev=0.3,
                  control_delay=1)


def trace(env, seed, steps=4, actions=None):
    """Frames, instruction, camera pose and proprio of a short rollout."""
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [(obs["rgb"].copy(), obs["depth"].copy(), obs["instruction"], obs["proprio"].copy(),
            np.asarray(info["camera"]["T_world_camera"]).copy())]
    for t in range(steps):
        a = actions[t] if actions is not None else rng.uniform(-1, 1, env.action_space.shape)
        obs, _, _, _, info = env.step(a)
        out.append((obs["rgb"].copy(), obs["depth"].copy(), obs["instruction"], obs["proprio"].copy(),
                    np.asarray(info["camera"]["T_world_camera"]).copy()))
    return out


def same(a, b) -> bool:
    return all(all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(p, q))
               for p, q in zip(a, b))


@pytest.mark.parametrize("world", WORLDS)
def test_default_options_render_every_frame_as_without_them(world):
    plain, none, default = WORLDS[world](), WORLDS[world](shift=None), WORLDS[world](shift=Shift())
    try:
        assert none._randomizer is None and default._randomizer is None  # no extra work
        for seed in (0, 7):
            ref = trace(plain, seed)
            assert same(ref, trace(none, seed)) and same(ref, trace(default, seed))
    finally:
        for env in (plain, none, default):
            env.close()


@pytest.mark.parametrize("world", WORLDS)
def test_the_camera_moves_and_turns_by_the_magnitude_asked(world):
    plain, moved = WORLDS[world](), WORLDS[world](shift="camera_offset_m=0.05,camera_rotation_deg=5")
    try:
        for seed in (1, 2, 3):
            (_, _, text0, _, T0), = trace(plain, seed, steps=0)
            (_, _, text1, _, T1), = trace(moved, seed, steps=0)
            assert text0 == text1  # the same scene
            # (driving: the camera rides on the car, whose pose is the same at reset)
            assert np.linalg.norm(T1[:3, 3] - T0[:3, 3]) == pytest.approx(0.05, abs=1e-6)
            cos = (np.trace(T0[:3, :3].T @ T1[:3, :3]) - 1) / 2
            assert math.degrees(math.acos(min(1.0, cos))) == pytest.approx(5.0, abs=1e-4)
    finally:
        plain.close()
        moved.close()


@pytest.mark.parametrize("world", WORLDS)
def test_lights_scale_and_the_image_darkens(world):
    plain, dim = WORLDS[world](), WORLDS[world](shift={"light_scale": 0.5})
    try:
        (rgb0, *_), = trace(plain, 4, steps=0)
        (rgb1, *_), = trace(dim, 4, steps=0)
        np.testing.assert_allclose(dim.model.light_diffuse, 0.5 * plain.model.light_diffuse, rtol=1e-6)
        np.testing.assert_allclose(dim.model.vis.headlight.ambient, 0.5 * plain.model.vis.headlight.ambient,
                                   rtol=1e-6)
        assert rgb1.mean() < 0.75 * rgb0.mean()
    finally:
        plain.close()
        dim.close()


def test_tabletop_distractors_are_present_and_not_named():
    plain, cluttered = TabletopEnv(), TabletopEnv(shift={"distractors": 3})
    try:
        for seed in range(6):
            _, info0 = plain.reset(seed=seed)
            obs, info = cluttered.reset(seed=seed)
            ids = info["distractor_ids"]
            assert ids and len(ids) <= 3 and len(info["objects"]) == len(info0["objects"]) + len(ids)
            named = obs["instruction"].split()[2]  # "<verb> the <colour> ..."
            for i in ids:
                assert info["objects"][i]["color"] != named and i not in info["target_ids"]
            for a, b in zip(info0["objects"], info["objects"]):  # the scene itself is unchanged
                np.testing.assert_allclose(a["position"], b["position"], atol=1e-9)
            assert info["target_ids"] == info0["target_ids"]
        counts = [len(cluttered.reset(seed=s)[1]["distractor_ids"]) for s in range(10)]
        assert sum(c == 3 for c in counts) >= 8  # exact unless the table is full
    finally:
        plain.close()
        cluttered.close()


def test_driving_distractors_stand_beyond_the_road_and_change_nothing_else():
    plain, cluttered = DrivingEnv(), DrivingEnv(shift={"distractors": 3})
    try:
        for seed in range(3):
            obs0, info0 = plain.reset(seed=seed)
            obs, info = cluttered.reset(seed=seed)
            assert obs["instruction"] == obs0["instruction"] and len(info["distractors"]) == 3
            assert [o["id"] for o in info["objects"]] == [o["id"] for o in info0["objects"]]
            for d in info["distractors"]:
                _, offset, _ = cluttered.world_to_frenet(*d["position"][:2])
                assert abs(offset) >= driving.DISTRACTOR_OFFSET[0] - 1e-6 > driving.OFFROAD_OFFSET
            assert not np.array_equal(obs["rgb"], obs0["rgb"])  # (they are in view at the start)
    finally:
        plain.close()
        cluttered.close()


@pytest.mark.parametrize("world", WORLDS)
def test_a_control_delay_applies_each_action_one_step_late(world):
    plain, late = WORLDS[world](), WORLDS[world](shift={"control_delay": 1})
    try:
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, (5, *plain.action_space.shape)).astype(np.float32)
        shifted = [np.zeros_like(actions[0]), *actions[:-1]]
        a, b = trace(late, 5, steps=5, actions=actions), trace(plain, 5, steps=5, actions=shifted)
        assert same(a, b)
        assert not same(a, trace(plain, 5, steps=5, actions=actions))
    finally:
        plain.close()
        late.close()


def test_the_tabletop_expert_plans_through_a_control_delay():
    """Under a one-step delay the expert plans from where the pending action leaves the
    fingertip: it solves as many episodes as undelayed, in about as many steps, without the
    step-by-step overshoot of planning from the measured fingertip (bench/expert_delay.py)."""
    from expert_delay import run  # bench/

    from embodied_stack.sim.experts.tabletop import TabletopExpert

    seeds = range(700, 730)
    plain, late = TabletopEnv(), TabletopEnv(shift={"control_delay": 1})
    try:
        undelayed = run(plain, TabletopExpert(plain), seeds)
        delayed = run(late, TabletopExpert(late), seeds)
        measured = run(late, TabletopExpert(late, plan_through_delay=False), seeds)
    finally:
        plain.close()
        late.close()
    assert undelayed["success"] == 1.0 and delayed["success"] >= 29 / 30
    assert delayed["mean_steps"] <= 1.3 * undelayed["mean_steps"]
    assert delayed["sign_flips"] <= undelayed["sign_flips"] + 0.05
    # what the predictor is for: planning from the measured fingertip overshoots
    assert measured["sign_flips"] > 2 * delayed["sign_flips"] and measured["success"] < delayed["success"]


@pytest.mark.parametrize("world", WORLDS)
def test_a_shift_is_deterministic_per_seed_and_keeps_the_scene(world):
    env, again = WORLDS[world](shift={**EVERYTHING, "ranges": True}), WORLDS[world](shift=EVERYTHING)
    try:
        assert same(trace(env, 11), trace(env, 11))
        assert not same(trace(env, 11), trace(env, 12))
        assert trace(env, 11)[0][2] == trace(again, 11)[0][2]  # the instruction: the scene's draw
        drawn = env._randomizer.drawn
        assert np.linalg.norm(drawn["camera_offset"]) <= 0.05 and drawn["control_delay"] in (0, 1)
    finally:
        env.close()
        again.close()


def test_validation_names_the_bad_value_and_the_allowed_range():
    with pytest.raises(ValueError, match=r"camera_offset_m=-0\.1 out of range \[0\.0, 0\.5\]"):
        Shift(camera_offset_m=-0.1)
    with pytest.raises(ValueError, match=r"distractors=1\.5: must be an integer in \[0, 3\]"):
        Shift(distractors=1.5)
    with pytest.raises(ValueError, match=r"light_scale=nan"):
        Shift(light_scale=float("nan"))
    with pytest.raises(ValueError, match="unknown fields"):
        Shift.from_option({"camera_offset": 0.1})
    with pytest.raises(ValueError, match="key=value"):
        Shift.parse("camera_offset_m")
    with pytest.raises(ValueError, match="distractors=1 needs objects='primitives'"):
        TabletopEnv(objects="shapes", shift={"distractors": 1})
    assert Shift.parse("camera_offset_m=0.05, control_delay=1, depth_noise=true") == Shift(
        camera_offset_m=0.05, control_delay=1, depth_noise=True)
    assert Shift.parse(Shift(**EVERYTHING).describe()) == Shift(**EVERYTHING)
    assert Shift.from_option("none") is None and Shift.from_option(Shift()) is None
    assert set(LIMITS) <= set(Shift.__dataclass_fields__)


def test_paraphrases_are_new_words_in_the_worlds_charset_and_fixed_per_seed():
    para = Paraphraser(robustness.PARAPHRASES)
    grammar = {"driving": {s for texts in driving.INSTRUCTIONS.values() for s in texts},
               "tabletop": {tabletop.make_instruction(task, c, n, d)
                            for task, dirs in (("touch", [None]), ("push", list(tabletop.DIRECTIONS)))
                            for c in tabletop.COLOR_NAMES for n in (*tabletop.CLASS_NAMES, None) for d in dirs}}
    for world, texts in grammar.items():
        out = {para.rewrite(world, seed, text) for text in sorted(texts) for seed in range(12)}
        assert len(out) > 3 * len(texts) ** 0.5 and not out & texts
        for text in out:
            assert 0 < len(text) <= INSTRUCTION_MAX_LEN and set(text) <= set(INSTRUCTION_CHARSET), text
    assert para.rewrite("tabletop", 3, "push the red cube to the left") == para.rewrite(
        "tabletop", 3, "push the red cube to the left")
    assert "red" in para.rewrite("tabletop", 5, "touch the red ball")
    with pytest.raises(ValueError, match="not an instruction"):
        para.rewrite("tabletop", 0, "dance")


def test_the_bench_pairs_each_shift_with_the_unshifted_run_on_the_same_seeds():
    # 10 seeds from 100: unshifted fails 100, 101; shifted fails 101, 102, 103, 104
    base = robustness.cell_figures("full_tabletop_none", 10, 100, [100, 101], None)
    f = robustness.cell_figures("full_tabletop_light_050", 10, 100, [104, 101, 102, 103], [100, 101])
    assert base["full_tabletop_none_success"] == 0.8 and "full_tabletop_none_diff" not in base
    assert f["full_tabletop_light_050_success"] == 0.6
    assert f["full_tabletop_light_050_diff"] == pytest.approx(-0.2)
    assert (f["full_tabletop_light_050_only_shifted"], f["full_tabletop_light_050_only_unshifted"]) == (1, 3)
    assert f["full_tabletop_light_050_mcnemar_p"] == pytest.approx(2 * 5 / 16)  # 1 vs 3 disagreeing seeds
    d = np.array([1, 0, -1, -1, -1, 0, 0, 0, 0, 0.0])
    half = 1.959964 * d.std(ddof=1) / math.sqrt(10)
    assert f["full_tabletop_light_050_diff_ci95"] == pytest.approx([-0.2 - half, -0.2 + half])
    assert f["full_tabletop_light_050_failed_seeds"] == [101, 102, 103, 104]
    lo, hi = f["full_tabletop_light_050_ci95"]
    assert lo < 0.6 < hi
    assert set(robustness.CELLS) >= {"none", "camera_2cm_2deg", "camera_5cm_5deg", "camera_10cm_10deg",
                                     "light_030", "light_050", "light_150", "light_200", "colour",
                                     "distractors_1", "distractors_3", "paraphrase", "delay_1", "rgb_noise_8"}
    for cell, (_, _, spec) in robustness.CELLS.items():
        assert spec in ("none", "paraphrase") or Shift.parse(spec).active, cell


def test_the_bench_compares_two_models_cell_by_cell_on_the_same_seeds():
    def result(failed_none, failed_light):
        out = {"episodes": 10, "first_seed": 100, "cells": {}, "model": "m"}
        out.update(robustness.cell_figures("full_tabletop_none", 10, 100, failed_none, None))
        out.update(robustness.cell_figures("full_tabletop_light_050", 10, 100, failed_light, failed_none))
        return out

    old, new = result([100, 101], [100, 101, 102, 103]), result([100], [100, 101])
    c = robustness.compare_runs(old, new)
    assert c["full_tabletop_none_old"] == 0.8 and c["full_tabletop_none_new"] == 0.9
    assert c["full_tabletop_light_050_diff"] == pytest.approx(0.2)
    assert c["full_tabletop_light_050_mcnemar_p"] == pytest.approx(0.5)  # 2 vs 0 disagreeing seeds
    with pytest.raises(ValueError, match="differ in episodes"):
        robustness.compare_runs(old, {**new, "episodes": 20})
