"""The Driving world (EmbodiedStack/Driving-v0) and its scripted expert."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import embodied_stack.sim  # noqa: F401  (registers the worlds)
from embodied_stack.sim.experts.driving import DrivingExpert
from embodied_stack.sim.worlds import driving
from embodied_stack.sim.worlds.base import INSTRUCTION_CHARSET, INSTRUCTION_MAX_LEN
from embodied_stack.sim.worlds.driving import TASKS, DrivingEnv


@pytest.fixture(scope="module")
def env():
    world = DrivingEnv(width=64, height=64, with_segmentation=True)
    yield world
    world.close()


def rollout(world, seed, task, actions):
    obs, info = world.reset(seed=seed, options={"task": task})
    trace = [(obs, 0.0, False, False, info)]
    for action in actions:
        step = world.step(action)
        trace.append(step)
        if step[2] or step[3]:
            break
    return trace


def run_expert(world, seed, task=None):
    expert = DrivingExpert(world)
    obs, info = world.reset(seed=seed, options=None if task is None else {"task": task})
    expert.reset()
    while True:
        obs, reward, terminated, truncated, info = world.step(expert(obs, info))
        if terminated or truncated:
            return info


def test_check_env_passes_without_unexpected_warnings():
    world = gym.make("EmbodiedStack/Driving-v0", render_mode="rgb_array").unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(world)
    # Depth (0, inf) and proprio (-inf, inf) are unbounded by design (shared spaces).
    unexpected = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert unexpected == []
    frame = world.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 5
    world.close()


def test_same_seed_same_rollout_and_seeds_differ(env):
    actions = np.random.default_rng(0).uniform(-0.4, 0.6, (25, 2)).astype(np.float32)
    first = rollout(env, 11, "keep_lane", actions)
    other = DrivingEnv(width=64, height=64, with_segmentation=True)
    second = rollout(other, 11, "keep_lane", actions)
    assert len(first) == len(second) > 5
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(first, second):
        for key in ("rgb", "depth", "proprio"):
            np.testing.assert_array_equal(o1[key], o2[key])
        assert o1["instruction"] == o2["instruction"]
        assert (r1, te1, tr1, i1["outcome"]) == (r2, te2, tr2, i2["outcome"])
        np.testing.assert_array_equal(i1["segmentation"], i2["segmentation"])
        for a, b in zip(i1["objects"], i2["objects"]):
            np.testing.assert_array_equal(a["position"], b["position"])
    other.close()
    # Another seed: another road and scene.
    obs_a, _ = env.reset(seed=1, options={"task": "keep_lane"})
    heading_a = list(env.segment_heading)
    obs_b, _ = env.reset(seed=2, options={"task": "keep_lane"})
    assert heading_a != list(env.segment_heading) or not np.array_equal(obs_a["rgb"], obs_b["rgb"])


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((1, 2)), [np.nan, 0.0], [0.0, np.inf],
                                 "fast"])
def test_bad_actions_raise_and_leave_the_state_alone(env, bad):
    env.reset(seed=3, options={"task": "keep_lane"})
    env.step(np.array([0.1, 0.2], dtype=np.float32))
    before = (env.ego_x, env.ego_y, env.ego_yaw, env.ego_speed, env.elapsed_steps)
    with pytest.raises(ValueError):
        env.step(bad)
    assert (env.ego_x, env.ego_y, env.ego_yaw, env.ego_speed, env.elapsed_steps) == before
    obs, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert env.observation_space.contains(obs) and info["action_clipped"] is False


def test_out_of_range_actions_are_clipped_and_reported(env):
    twin = DrivingEnv(width=64, height=64, with_segmentation=False)
    env.reset(seed=4, options={"task": "keep_lane"})
    twin.reset(seed=4, options={"task": "keep_lane"})
    obs, _, _, _, info = env.step(np.array([2.5, -7.0]))
    obs_twin, _, _, _, info_twin = twin.step(np.array([1.0, -1.0]))
    assert info["action_clipped"] is True and info_twin["action_clipped"] is False
    np.testing.assert_array_equal(obs["proprio"], obs_twin["proprio"])
    assert obs["proprio"][1] == pytest.approx(driving.MAX_STEER)
    twin.close()


def test_observation_and_info_contents(env):
    obs, info = env.reset(seed=5, options={"task": "stop"})
    assert env.observation_space.contains(obs)
    assert obs["rgb"].shape == (64, 64, 3) and obs["depth"].dtype == np.float32
    assert info["task"] == "stop" and info["target_lane"] == info["ego"]["lane"]
    assert info["outcome"] == f"lane:{info['ego']['lane']}" and info["is_success"] is False
    assert info["segmentation"].shape == (64, 64) and info["segmentation"].dtype == np.int32
    assert {o["class"] for o in info["objects"]} <= {"car", "barrier"}
    for o in info["objects"]:
        assert o["position"].shape == (3,) and o["quaternion"].shape == (4,)
        assert o["size"].shape == (3,) and np.isclose(np.linalg.norm(o["quaternion"]), 1.0)
    obs, *_ = env.step(np.array([0.0, 0.5]))
    # Ego state only: speed, steering, yaw rate, acceleration; no lane offset, no episode clock.
    speed, steer, yaw_rate, accel = obs["proprio"][:4]
    assert speed == pytest.approx(env.ego_speed) and accel == pytest.approx(1.5, abs=1e-4)
    assert np.all(obs["proprio"][4:] == 0.0)


def test_instruction_grammar_and_vocabulary():
    vocabulary = set(driving.instruction_vocabulary())
    assert {"keep", "lane", "left", "right", "stop", "obstacle"} <= vocabulary
    for task in TASKS:
        assert len(driving.INSTRUCTIONS[task]) >= 2
        for text in driving.INSTRUCTIONS[task]:
            assert 1 <= len(text) <= INSTRUCTION_MAX_LEN
            assert set(text) <= set(INSTRUCTION_CHARSET) and set(text.split()) <= vocabulary
    assert "change to the left lane" in driving.INSTRUCTIONS["change_left"]
    assert "stop behind the obstacle" in driving.INSTRUCTIONS["stop"]


def test_expert_succeeds_on_seeded_sample():
    world = DrivingEnv(width=64, height=64, with_segmentation=False)
    results = [run_expert(world, seed, TASKS[seed % len(TASKS)]) for seed in range(10)]
    world.close()
    assert sum(info["is_success"] for info in results) >= 9


def test_two_envs_in_one_thread_each_render_their_own_scene():
    # Each env owns a GL context; making or closing another one must not leave this env
    # drawing into a foreign (or no) context and returning stale frames.
    first = DrivingEnv(with_segmentation=False)
    first.reset(seed=0, options={"task": "keep_lane"})
    second = DrivingEnv(with_segmentation=False)
    expected, _ = second.reset(seed=1, options={"task": "keep_lane"})
    second.close()
    obs, _ = first.reset(seed=1, options={"task": "keep_lane"})
    first.close()
    np.testing.assert_array_equal(obs["rgb"], expected["rgb"])


def test_outcomes_for_success_and_collision(env):
    info = run_expert(env, 21, "change_left")
    assert info["is_success"] and info["outcome"] == f"lane:{info['target_lane']}"
    info = run_expert(env, 22, "stop")
    assert info["is_success"] and info["outcome"] == f"stopped:{info['target_lane']}"
    # Steer like the expert but floor the throttle: the barrier ends the episode.
    expert = DrivingExpert(env)
    obs, info = env.reset(seed=22, options={"task": "stop"})
    for _ in range(env.max_episode_steps):
        action = expert(obs, info)
        action[1] = 1.0
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated and info["outcome"] == "collision" and not info["is_success"]
    assert reward < -5.0


def test_doing_nothing_fails_keep_lane_on_a_curve(env):
    # The road curves after 18 m, so holding the wheel straight leaves the lane.
    for seed in range(50):
        env.reset(seed=seed, options={"task": "keep_lane"})
        if max(abs(h) for h in env.segment_heading[:15]) > 0.5:
            break
    obs, info = env.reset(seed=seed, options={"task": "keep_lane"})
    while True:
        obs, reward, terminated, truncated, info = env.step(np.zeros(2))
        if terminated or truncated:
            break
    assert not info["is_success"]


def backproject(depth, camera, mask):
    v, u = np.nonzero(mask & (depth > 0))
    rays = np.linalg.inv(camera["K"]) @ np.stack([u, v, np.ones_like(u)]).astype(float)
    points_camera = rays * depth[v, u]
    T = camera["T_world_camera"]
    return (T[:3, :3] @ points_camera + T[:3, 3:4]).T


def quat_to_matrix(q):
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def test_segmentation_and_depth_agree_with_objects():
    world = DrivingEnv(width=96, height=96, with_segmentation=True)
    checked = 0
    for seed in range(6):
        obs, info = world.reset(seed=seed, options={"task": "stop"})
        for _ in range(8):  # closer to the objects
            obs, _, _, _, info = world.step(np.array([0.0, 0.0]))
        seg = info["segmentation"]
        assert set(np.unique(seg)) <= {-1} | {o["id"] for o in info["objects"]}
        for o in info["objects"]:
            mask = seg == o["id"]
            if mask.sum() < 6:
                continue
            points = backproject(obs["depth"], info["camera"], mask)
            local = (points - o["position"]) @ quat_to_matrix(o["quaternion"])
            inside = np.all(np.abs(local) <= o["size"] / 2 + 0.2, axis=1)
            assert inside.mean() > 0.95, (seed, o["class"], inside.mean())
            checked += 1
    world.close()
    assert checked >= 4


def test_lane_markings_are_visible_at_64x64(env):
    obs, info = env.reset(seed=0, options={"task": "keep_lane"})
    rgb, camera = obs["rgb"].astype(int), info["camera"]
    K, world_to_camera = camera["K"], np.linalg.inv(camera["T_world_camera"])
    ahead = env.ego_s + driving.EGO_LENGTH / 2 + 12.0  # about 12 m in front of the camera
    length = driving.SEGMENT_LENGTH
    hits = 0
    for d in (-driving.ROAD_HALF_WIDTH, -driving.LANE_WIDTH / 2, driving.LANE_WIDTH / 2,
              driving.ROAD_HALF_WIDTH):
        solid = abs(d) == driving.ROAD_HALF_WIDTH
        s = ahead if solid else (ahead // length + 0.5) * length  # a dash's middle
        x, y, _ = env.frenet_to_world(s, d)
        p = world_to_camera @ np.array([x, y, 0.03, 1.0])
        u, v = np.rint((K @ (p[:3] / p[2]))[:2]).astype(int)
        if not (4 <= u < 60 and 0 <= v < 64):
            continue  # outside the view from this lane
        row = rgb[v]
        marking = row[u - 1:u + 2].min(axis=1).max()  # brightest of three pixels
        # Image right is the road's right (-d): the road lies left of the right edge line.
        beside = row[u - 3] if d < 0 else row[u + 3]
        assert marking > 170 and beside.max() < 130, (d, u, v, row[u - 3:u + 4].tolist())
        hits += 1
    assert hits >= 2
