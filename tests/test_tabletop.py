"""The Tabletop world (EmbodiedStack/Tabletop-v0) and its scripted expert."""

import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import embodied_stack.sim  # noqa: F401  (registers the worlds)
from embodied_stack.sim.experts.tabletop import TabletopExpert
from embodied_stack.sim.worlds import tabletop
from embodied_stack.sim.worlds.tabletop import TabletopEnv, instruction_vocabulary


@pytest.fixture(scope="module")
def env():
    world = TabletopEnv(width=64, height=64, with_segmentation=True)
    yield world
    world.close()


def rollout(world, seed, actions):
    obs, info = world.reset(seed=seed)
    trace = [(obs, 0.0, False, False, info)]
    for action in actions:
        step = world.step(action)
        trace.append(step)
        if step[2] or step[3]:
            break
    return trace


def run_expert(world, seed):
    expert = TabletopExpert(world)
    obs, info = world.reset(seed=seed)
    expert.reset()
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = world.step(expert(obs, info))
        total += reward
        if terminated or truncated:
            return info, total, terminated


def assert_same(a, b):
    """Recursive equality of observations/infos (arrays compared exactly)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    else:
        assert a == b


def drive_to(world, goal, max_steps=40):
    """Fly the fingertip toward `goal` (world xyz) with a P-controller; stop on termination."""
    obs = info = None
    for _ in range(max_steps):
        ee = world.privileged_state["ee"]
        velocity = (np.asarray(goal) - ee) / (tabletop.MAX_SPEED / tabletop.CONTROL_HZ)
        velocity /= max(1.0, float(np.max(np.abs(velocity))))
        obs, _, terminated, truncated, info = world.step(velocity.astype(np.float32))
        if terminated or truncated:
            return obs, info, terminated
    return obs, info, False


def test_check_env_passes_without_unexpected_warnings():
    world = gym.make("EmbodiedStack/Tabletop-v0", render_mode="rgb_array").unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(world)
    # Depth (0, inf) and proprio (-inf, inf) are unbounded by design (the shared spaces).
    unexpected = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert unexpected == []
    frame = world.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
    world.close()


def test_same_seed_same_rollout_and_seeds_differ(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 3)).astype(np.float32)
    rollout(env, 8, actions)  # some history first: a reset must not depend on it
    first = rollout(env, 7, actions)
    twin = TabletopEnv(width=64, height=64, with_segmentation=True)
    try:
        second = rollout(twin, 7, actions)  # a separate env: nothing shared but the seed
    finally:
        twin.close()
    assert len(first) == len(second) > 1
    for a, b in zip(first, second):
        assert_same(a, b)
    # The rollout did something: the fingertip moved and the image changed.
    assert not np.array_equal(first[0][0]["proprio"][:3], first[-1][0]["proprio"][:3])
    assert not np.array_equal(first[0][0]["rgb"], first[-1][0]["rgb"])

    # Different seeds give different scenes.
    _, info_a = env.reset(seed=1)
    _, info_b = env.reset(seed=2)
    pos_a = [o["position"] for o in info_a["objects"]]
    pos_b = [o["position"] for o in info_b["objects"]]
    assert len(pos_a) != len(pos_b) or not np.allclose(pos_a, pos_b)


def test_bad_actions_raise_and_leave_the_world_untouched(env):
    env.reset(seed=3)
    env.step(np.array([0.3, -0.2, 0.0], np.float32))
    before = (env.data.qpos.copy(), env.data.qvel.copy(), env.data.time)
    for bad in ([0.1, 0.2], np.zeros((3, 1)), [np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf],
                "left", None):
        with pytest.raises(ValueError):
            env.step(bad)
        assert np.array_equal(env.data.qpos, before[0])
        assert np.array_equal(env.data.qvel, before[1]) and env.data.time == before[2]
    obs, reward, terminated, truncated, info = env.step(np.zeros(3, np.float32))
    assert env.observation_space.contains(obs) and np.isfinite(reward)
    assert info["action_clipped"] is False


def test_out_of_range_actions_are_clipped_and_reported(env):
    twin = TabletopEnv(width=64, height=64, with_segmentation=False)
    try:
        env.reset(seed=4)
        twin.reset(seed=4)
        obs, _, _, _, info = env.step(np.array([5.0, -3.0, 0.5], np.float32))
        obs_twin, _, _, _, info_twin = twin.step(np.array([1.0, -1.0, 0.5], np.float32))
    finally:
        twin.close()
    assert info["action_clipped"] is True and info_twin["action_clipped"] is False
    # The clipped command moved the fingertip exactly as the in-range one did.
    assert np.array_equal(obs["proprio"], obs_twin["proprio"])
    assert np.array_equal(obs["rgb"], obs_twin["rgb"])
    # An action of 1.0 means MAX_SPEED: the fingertip's x velocity (proprio[3]) is about that.
    assert 0.9 * tabletop.MAX_SPEED < obs["proprio"][3] <= 1.01 * tabletop.MAX_SPEED


def test_expert_succeeds_on_seeded_sample(env):
    results = [run_expert(env, seed) for seed in range(10)]
    successes = sum(info["is_success"] for info, _, _ in results)
    assert successes >= 9
    for info, total_reward, terminated in results:
        if info["is_success"]:
            assert terminated
            touched = int(re.fullmatch(r"touched:(\d+)", info["outcome"]).group(1))
            assert touched in info["target_ids"]
            assert total_reward > 1.0  # progress plus the success bonus


def test_touching_a_wrong_object_terminates_as_failure(env):
    for seed in range(50):
        _, info = env.reset(seed=seed)
        others = [o for o in info["objects"] if o["id"] not in info["target_ids"]]
        if info["task"] == "touch" and others:
            break
    wrong = others[0]
    above = wrong["position"] + [0.0, 0.0, 0.1]
    obs, info, terminated = drive_to(env, above)
    assert not terminated and obs["proprio"][6] == 0.0  # hovering: no contact yet
    obs, info, terminated = drive_to(env, wrong["position"])
    assert terminated
    assert info["outcome"] == f"touched:{wrong['id']}"
    assert info["is_success"] is False
    assert obs["proprio"][6] == 1.0  # the contact flag


def test_truncates_at_max_steps_and_proprio_layout():
    world = TabletopEnv(width=32, height=32, with_segmentation=False, max_episode_steps=5)
    try:
        obs, _ = world.reset(seed=5)
        assert obs["proprio"][7] == 0.0 and obs["proprio"][6] == 0.0
        np.testing.assert_allclose(obs["proprio"][:3], world.privileged_state["ee"], atol=1e-6)
        for step in range(1, 6):
            obs, _, terminated, truncated, info = world.step(np.zeros(3, np.float32))
            assert not terminated
            assert truncated == (step == 5)
            assert obs["proprio"][7] == 0.0  # no episode clock: a real arm has none
        assert info["outcome"] == "none" and info["is_success"] is False
    finally:
        world.close()


def test_segmentation_back_projects_onto_its_objects():
    world = TabletopEnv(width=160, height=120, with_segmentation=True)
    try:
        checked = 0
        for seed in range(3):
            obs, info = world.reset(seed=seed)
            seg, depth = info["segmentation"], obs["depth"]
            assert seg.dtype == np.int32 and seg.shape == depth.shape
            ids = {o["id"] for o in info["objects"]}
            assert set(np.unique(seg)) <= ids | {-1}
            K = info["camera"]["K"]
            T = info["camera"]["T_world_camera"]
            for obj in info["objects"]:
                v, u = np.nonzero(seg == obj["id"])
                if len(u) < 5:
                    continue  # hidden behind another object
                z = depth[v, u]
                assert np.all(z > 0)
                rays = np.linalg.inv(K) @ np.stack([u, v, np.ones_like(u)]).astype(float)
                points = (T[:3, :3] @ (rays * z) + T[:3, 3:4]).T
                # Every visible surface point lies within the object's half-diagonal (+ margin).
                reach = 0.5 * np.linalg.norm(obj["size"]) + 0.01
                assert np.max(np.linalg.norm(points - obj["position"], axis=1)) < reach
                checked += 1
            # Pixels outside every mask are not on any object.
            assert np.all(seg[depth == 0] == -1)
        assert checked >= 9
    finally:
        world.close()


def test_instructions_come_from_the_grammar_and_fit_the_space(env):
    vocabulary = set(instruction_vocabulary())
    assert {"touch", "push", "red", "cube", "ball", "cylinder", "left", "object"} <= vocabulary
    ambiguous = tasks = 0
    seen_tasks = set()
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        text = obs["instruction"]
        assert env.observation_space["instruction"].contains(text)
        assert env.observation_space.contains(obs)
        assert set(text.split()) <= vocabulary
        seen_tasks.add(info["task"])
        # The targets are exactly the objects the words describe.
        words = text.split()
        color, noun = words[2], words[3]
        expected = [o["id"] for o in info["objects"]
                    if o["color"] == color and noun in ("object", o["class"])]
        assert info["target_ids"] == expected
        ambiguous += len(expected) > 1
        tasks += 1
    assert seen_tasks == {"touch", "push"}
    assert 0 < ambiguous < tasks  # some, not all, are ambiguous on purpose


def test_expert_is_a_function_of_the_state(env):
    """DAgger asks the expert at states the learner visits: apart from its committed target,
    its action must not depend on its history (no hidden phase)."""
    rng = np.random.default_rng(0)
    checked = 0
    for seed in (2, 3, 5):
        obs, info = env.reset(seed=seed)
        running = TabletopExpert(env)
        for _ in range(40):
            action = running(obs, info)
            fresh = TabletopExpert(env)
            fresh._target = running._target
            np.testing.assert_allclose(fresh(obs, info), action, atol=1e-6)
            checked += 1
            # Perturbed execution visits states the expert alone would not.
            noisy = np.clip(action + rng.normal(0, 0.4, 3), -1, 1).astype(np.float32)
            obs, _, terminated, truncated, info = env.step(noisy)
            if terminated or truncated:
                break
    assert checked >= 30
