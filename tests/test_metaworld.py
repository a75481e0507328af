"""Meta-World MT10 as worlds (sim/worlds/metaworld_mt10.py): the MuJoCo 4.0 fix of Meta-World's
mocap welds, seeds that fix the start, 64x64 RGB from a fixed camera, the scripted experts and
their exact look-ahead, and the time limit inside chunks."""

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("metaworld") is None,
    reason="metaworld is not installed (setup.sh installs it: pip install --no-deps "
           "metaworld==3.1.1 beside scipy; see docs/worlds.md, Meta-World MT10)")

import embodied_stack.sim.worlds.base  # noqa: E402,F401  (headless GL, before any `import mujoco`)
from embodied_stack.sim.worlds import make_world, registered_worlds, registry, world_spec  # noqa: E402
from embodied_stack.sim.worlds import metaworld_mt10 as mt10  # noqa: E402


@pytest.fixture(scope="module")
def mt10_env():
    env = make_world("metaworld_mt10")
    yield env
    env.close()


def test_mt10_worlds_are_registered_with_one_embodiment():
    worlds = set(registered_worlds())
    assert "metaworld_mt10" in worlds
    assert {mt10.world_name(t) for t in mt10.TASK_NAMES} <= worlds
    assert len(mt10.TASK_NAMES) == 10
    spec = world_spec("metaworld_mt10")
    assert spec.embodiment.name == "sawyer" and spec.embodiment.dims == 4
    assert spec.embodiment.gripper == 3 and spec.success_key == "success"
    assert {world_spec(mt10.world_name(t)).embodiment for t in mt10.TASK_NAMES} == {spec.embodiment}
    assert {"reach", "puck", "drawer", "window", "peg"} <= spec.words()


def test_the_mocap_weld_fix_under_mujoco_4():
    """MuJoCo 4 widened eq_data to 12 fields; Meta-World's 11-value write raised. The override
    writes the 11 values, marks the relpose as given, and the hand follows the mocap."""
    import mujoco
    from metaworld.sawyer_xyz_env import SawyerMocapBase

    env = make_world("metaworld_reach")
    try:
        sim = env.unwrapped.sim
        assert SawyerMocapBase.reset_mocap_welds is mt10.reset_mocap_welds
        model = sim.model
        welds = [i for i in range(model.neq) if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD]
        assert welds
        for i in welds:
            row = model.eq_data[i]
            assert np.array_equal(row[:11], mt10._WELD_DATA)
            assert (row[11:] == 0).all()  # (present under MuJoCo 4: mjNEQDATA == 12)
        before = model.eq_data.copy()
        mujoco.mj_setConst(model, sim.data)  # a relpose marked as given survives it
        assert np.array_equal(model.eq_data, before)
        # The hand follows the mocap: +x for 20 steps moves it by most of 20 x 1 cm.
        obs, _ = env.reset(seed=3)
        x0 = obs["proprio"][0]
        for _ in range(20):
            obs, *_ = env.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))
        assert 0.1 < obs["proprio"][0] - x0 < 0.21, obs["proprio"][0] - x0
    finally:
        env.close()


def test_seeds_fix_the_start_and_pick_the_task(mt10_env):
    env = mt10_env
    obs, info = env.reset(seed=100_003)
    again, info2 = env.reset(seed=100_003)
    assert info["task"] == "door-open" == info2["task"]
    assert np.array_equal(obs["rgb"], again["rgb"]) and np.array_equal(obs["proprio"], again["proprio"])
    assert np.array_equal(info["rand_vec"], info2["rand_vec"])
    assert obs["instruction"] == "open the door"
    # Ten consecutive seeds: each task once.
    tasks = [env.reset(seed=s)[1]["task"] for s in range(100_000, 100_010)]
    assert sorted(tasks) == sorted(t.removesuffix("-v3") for t in mt10.TASK_NAMES)
    # Different seeds of one task: different goals; the per-task world gives mt10's start.
    goals = {tuple(np.round(env.reset(seed=s)[1]["rand_vec"], 6)) for s in range(100_000, 100_050, 10)}
    assert len(goals) == 5
    single = make_world("metaworld_reach")
    try:
        a, ia = single.reset(seed=100_010)
        b, ib = env.reset(seed=100_010)
        assert ia["task"] == ib["task"] == "reach"
        assert np.array_equal(ia["rand_vec"], ib["rand_vec"]) and np.array_equal(a["rgb"], b["rgb"])
    finally:
        single.close()


def test_images_are_64x64_rgb_and_proprio_is_hand_and_gripper(mt10_env):
    obs, _ = mt10_env.reset(seed=7)
    assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].dtype == np.uint8
    assert obs["rgb"].std() > 10  # a scene, not a blank frame
    assert obs["depth"].shape == (64, 64) and not obs["depth"].any()  # no depth: zeros
    assert obs["proprio"].shape == (8,) and not obs["proprio"][4:].any()
    assert 0.0 <= obs["proprio"][3] <= 1.0  # gripper opening


@pytest.mark.parametrize("world,seeds", [("metaworld_push", (100_000, 100_001)),
                                         ("metaworld_drawer_open", (100_002, 100_003))])
def test_the_expert_solves_and_its_lookahead_restores_exactly(world, seeds):
    from embodied_stack.sim.experts import expert_chunk

    env = make_world(world)
    expert = registry.make_world_expert(env)
    try:
        for seed in seeds:
            runs = []
            for lookahead in (False, True):
                obs, info = env.reset(seed=seed)
                expert.reset()
                trace = []
                while True:
                    action = expert(obs, info)
                    if lookahead:
                        chunk, mask = expert_chunk(env, expert, 4, first_action=action)
                        assert chunk.shape == (4, 4) and mask[0]
                    obs, _, terminated, truncated, info = env.step(action)
                    trace.append(obs["proprio"].copy())
                    if terminated or truncated:
                        break
                runs.append((np.array(trace), obs["rgb"].copy(), info["is_success"]))
            assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
            assert runs[0][2] and runs[1][2], (world, seed)
    finally:
        env.close()


def test_the_time_limit_applies_inside_chunks():
    """Rollouts in chunks of 4 (refill at 1) end a failing episode at the spec's limit."""
    import dataclasses

    from embodied_stack.models.policy.interface import ExecutionMode
    from embodied_stack.sim.train.rollouts import WorldPool, run_episodes

    spec = world_spec("metaworld_reach")
    registry.register_world(dataclasses.replace(spec, name="metaworld_reach_short", episode_limit=9))
    try:
        from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
        from embodied_stack.sim.train.run import instruction_tokenizer

        config = ElasticVLAConfig(hidden_size=32, num_heads=2, ffn_size=64, num_layers=2,
                                  vision_width=32, vision_heads=2, max_action_dim=4,
                                  embodiments={"sawyer": 4}, keypoint_embodiments=[])
        model = ElasticVLA(config, instruction_tokenizer(["metaworld_mt10"])).eval()
        pool = WorldPool("metaworld_reach_short", 1, width=64, height=64)
        try:
            eps = run_episodes(model, pool, range(100_000, 100_003), ExecutionMode(model.config.chunk_length))
        finally:
            pool.close()
        for ep in eps:
            assert ep.steps <= 9 and (ep.success or ep.steps == 9), (ep.seed, ep.steps, ep.outcome)
            assert ep.instruction == "reach the goal"
    finally:
        registry.unregister_world("metaworld_reach_short")


def test_launch_gives_the_sawyer_its_joints_layout_and_gripper():
    """sim.launch.py world:=metaworld_mt10: the policy node publishes the 4-D action on
    joint_commands, the gripper (channel 3) also on gripper_command."""
    import os

    from embodied_stack.nodes.launch_graph import argument_defaults, robot_arguments, sim_arguments, sim_nodes

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    arguments = sim_arguments(repo) + robot_arguments(repo)
    specs = sim_nodes({**argument_defaults(arguments), "world": "metaworld_mt10",
                       "perception": "false", "elastic": "false"})
    extra = next(s for s in specs if s.executable == "policy_node").parameters[-1]
    assert extra["command"] == "joints" and extra["joint_gripper"] == 3
    assert extra["joint_low"] == [-0.01, -0.01, -0.01, -1.0]
    assert extra["proprio_names"][:4] == list(mt10.PROPRIO_NAMES) and extra["control_rate_hz"] == 80.0


@pytest.mark.ros
def test_mt10_runs_through_the_bridge_and_the_policy_node(tmp_path):
    """sim.launch.py world:=metaworld_push, expert backend, in a namespace: the policy node
    publishes the 4-D action on joint_commands and the gripper on gripper_command at 80 Hz,
    the bridge applies them and the episode finishes."""
    pytest.importorskip("rclpy")
    from ros_harness import wait_for
    from std_msgs.msg import Float64, Float64MultiArray
    from test_multi_robot import _Graph, _launch

    specs = _launch(namespace="mw1", world="metaworld_push", episodes="1", mode="lockstep",
                    backend="expert", perception="false", elastic="false")
    graph = _Graph(specs, str(tmp_path))
    try:
        commands: list = []
        grippers: list = []
        graph.listener.create_subscription(Float64MultiArray, "/mw1/joint_commands", commands.append, 100)
        graph.listener.create_subscription(Float64, "/mw1/gripper_command", grippers.append, 100)
        graph.spin()
        bridge = graph.nodes["/mw1/sim_bridge"]
        policy = graph.nodes["/mw1/policy_node"]
        assert policy.loop.config.kind == "joints" and policy.loop.config.control_rate_hz == 80.0
        assert wait_for(lambda: bridge.finished, timeout=120), (bridge.results, bridge.steps)
        assert bridge.world == "metaworld_push" and len(bridge.results) == 1
        assert commands and all(len(m.data) == 4 for m in commands)
        assert grippers and all(-1.0 <= m.data <= 1.0 for m in grippers)
        assert bridge.summary()["steps"] >= 10, bridge.summary()
    finally:
        graph.close()


def test_the_experts_features_point_at_the_hand_and_the_target_in_the_image():
    """features()[6:10]: the target's and the hand's image positions (the pointing heads'
    training targets), in the turned image the policy sees. Checked against the rendered
    segmentation: around the hand's pixel the camera sees the hand, around the target's the
    puck (at the mirrored positions, i.e. without the 180-degree turn, it sees the table)."""
    import mujoco

    env = make_world("metaworld_push")
    expert = registry.make_world_expert(env)
    world = env.unwrapped
    try:
        for seed in (100_000, 100_001, 100_002):
            obs, info = env.reset(seed=seed)
            for _ in range(10):
                obs, *_ = env.step(expert(obs, info))
            features = expert.features()
            flat, model = world._flat, world.sim.model
            np.testing.assert_allclose(features[:3], (flat[4:7] - flat[:3]) * 10.0, atol=1e-5)
            _, _, seg = world._renderers[world.task].render(world.sim.data, segmentation=True)
            seg = seg[::-1, ::-1]  # as obs["rgb"] is turned
            for uv, bodies in ((features[8:10], {"right_hand", "hand", "leftpad", "rightpad"}),
                               (features[6:8], {"obj"})):
                assert np.all((uv > 0) & (uv < 1)), (seed, uv)
                col, row = int(uv[0] * 64), int(uv[1] * 64)
                seen = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[g])
                        for g in np.unique(seg[max(row - 1, 0): row + 2, max(col - 1, 0): col + 2]) if g >= 0}
                assert seen & bodies, (seed, uv, seen)
    finally:
        env.close()
