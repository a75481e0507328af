"""The world spec and registry (sim/worlds/spec.py, registry.py): validation, registration from
an adapter file and from an entry point, the built-in worlds as registrations, every step of
an episode through the wrappers (time limit inside a chunk), and the third-party example
(examples/worlds/reacher.py: Gymnasium's MuJoCo Reacher-v5) evaluated and trained."""

import importlib.metadata
import json
import os

import gymnasium as gym
import numpy as np
import pytest

from embodied_stack.sim.worlds import (
    ACTION_NAMES,
    EMBODIMENT_OF_WORLD,
    PROPRIO_NAMES,
    EmbodimentSpec,
    WorldSpec,
    control_rate_hz,
    make_world,
    registered_worlds,
    registry,
    world_spec,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REACHER = os.path.join(REPO, "examples", "worlds", "reacher.py")

#: A world without MuJoCo: a dot to move onto a target; rgb, success and nothing else.
TOY_SOURCE = '''
import gymnasium
import numpy as np
from embodied_stack.sim.worlds import EmbodimentSpec, WorldSpec, register_world


class ToyEnv(gymnasium.Env):
    """A dot at x moves by the action; success: within 0.05 of the target. No time limit of
    its own (the spec's episode_limit is the only one), no proprio, depth or instruction."""

    def __init__(self, width=16, height=16, success_radius=0.05):
        self.width, self.height, self.radius = width, height, success_radius
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gymnasium.spaces.Dict(
            {"rgb": gymnasium.spaces.Box(0, 255, (height, width, 3), np.uint8)})

    def _obs(self):
        rgb = np.zeros((self.height, self.width, 3), np.uint8)
        rgb[..., 0] = int(255 * (self.x[0] + 1) / 2)
        return {"rgb": rgb}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2)
        self.target = self.np_random.uniform(-1, 1, 2)
        return self._obs(), {"hit": False}

    def step(self, action):
        self.x = np.clip(self.x + 0.2 * np.asarray(action, float), -1, 1)
        hit = bool(np.linalg.norm(self.x - self.target) < self.radius)
        return self._obs(), float(hit), False, False, {"hit": hit}


class ToyExpert:
    def __init__(self, env):
        self.env = env.unwrapped

    def reset(self):
        pass

    def __call__(self, obs, info):
        return np.clip((self.env.target - self.env.x) / 0.2, -1, 1).astype(np.float32)


register_world(WorldSpec(
    name="toy", make_env=ToyEnv, embodiment=EmbodimentSpec("toy_mover", ("vx", "vy"), (-1, -1), (1, 1)),
    control_rate_hz=10.0, episode_limit=7, success_key="hit", instruction="reach the target",
    expert=ToyExpert))
'''


@pytest.fixture
def toy_world(tmp_path, monkeypatch):
    """The toy world registered from an adapter file (and unregistered after)."""
    monkeypatch.setenv(registry.ENV_VAR, "")  # (restored after: load_world_file appends to it)
    path = tmp_path / "toy_adapter.py"
    path.write_text(TOY_SOURCE)
    added = registry.load_world_file(path)
    yield added, path
    registry.unregister_world("toy")
    registry._FILES_LOADED.discard(str(path.resolve()))


def _tiny_model(embodiments):
    from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
    from embodied_stack.sim.train.run import instruction_tokenizer

    config = ElasticVLAConfig(hidden_size=32, num_heads=2, ffn_size=64, num_layers=2,
                              vision_width=32, vision_heads=2,
                              embodiments={"arm": 3, "vehicle": 2, **embodiments})
    return ElasticVLA(config, instruction_tokenizer(["tabletop", "driving"])).eval()


# --- the spec ----------------------------------------------------------------------------


def _spec(**changes):
    fields = dict(name="w", make_env="Some-v0", embodiment=EmbodimentSpec("e", ("a",), (-1,), (1,)),
                  control_rate_hz=10.0, episode_limit=10, instruction="do it")
    return WorldSpec(**{**fields, **changes})


@pytest.mark.parametrize("changes, quoted", [
    ({"name": "Bad Name"}, "'Bad Name'"),
    ({"make_env": 3}, "make_env=3"),
    ({"control_rate_hz": 500.0}, "control_rate_hz=500.0"),
    ({"episode_limit": 0}, "episode_limit=0"),
    ({"proprio_names": tuple(f"p{i}" for i in range(65))}, "proprio_names="),
    ({"options": ("wind",)}, "['wind']"),
    ({"train_defaults": {"bc_steps": 3}}, "['bc_steps']"),
    ({"train_defaults": {"demo_episodes": -1}}, "demo_episodes"),
    ({"expert_lookahead": True}, "needs an expert"),
])
def test_spec_validation_quotes_the_bad_value(changes, quoted):
    with pytest.raises(ValueError, match=None) as err:
        _spec(**changes)
    assert quoted in str(err.value), str(err.value)


@pytest.mark.parametrize("args, quoted", [
    (("e", ("a", "b"), (-1,), (1, 1)), "low=(-1.0,)"),
    (("e", ("a",), (1,), (-1,)), "low=(1.0,)"),
    (("e", ("a", "a"), (-1, -1), (1, 1)), "repeat a name"),
    (("E!", ("a",), (-1,), (1,)), "'E!'"),
])
def test_embodiment_validation_quotes_the_bad_value(args, quoted):
    with pytest.raises(ValueError) as err:
        EmbodimentSpec(*args)
    assert quoted in str(err.value), str(err.value)
    with pytest.raises(ValueError, match="gripper=5"):
        EmbodimentSpec("e", ("a",), (-1,), (1,), gripper=5)
    with pytest.raises(ValueError, match="'arm_twist' takes 3"):
        EmbodimentSpec("e", ("a",), (-1,), (1,), ros_command="arm_twist")


# --- the registry ------------------------------------------------------------------------


def test_builtin_worlds_are_registrations_with_the_old_tables():
    assert {"tabletop", "driving"} <= set(registered_worlds())
    assert EMBODIMENT_OF_WORLD["tabletop"] == "arm" and EMBODIMENT_OF_WORLD["driving"] == "vehicle"
    assert PROPRIO_NAMES["tabletop"] == ["ee_x", "ee_y", "ee_z", "ee_vx", "ee_vy", "ee_vz",
                                         "contact", "unused_7"]
    assert PROPRIO_NAMES["driving"][:4] == ["speed", "steer", "yaw_rate", "accel"]
    assert ACTION_NAMES["tabletop"] == ["ee_vx", "ee_vy", "ee_vz"]
    assert ACTION_NAMES["driving"] == ["steer", "accel"]
    assert control_rate_hz("tabletop") == control_rate_hz("driving") == 10
    assert "nowhere" not in EMBODIMENT_OF_WORLD


def test_unknown_world_lists_the_registered_ones():
    with pytest.raises(ValueError) as err:
        world_spec("nowhere")
    message = str(err.value)
    assert "'nowhere'" in message and "'driving'" in message and "'tabletop'" in message
    assert "--world-file" in message and "embodied_stack.worlds" in message


def test_registration_from_an_adapter_file(toy_world):
    added, path = toy_world
    assert added == ["toy"] and "toy" in registered_worlds()
    assert EMBODIMENT_OF_WORLD["toy"] == "toy_mover"
    assert PROPRIO_NAMES["toy"] == [f"unused_{k}" for k in range(8)]
    # Worker processes find it through the environment variable.
    assert str(path.resolve()) in os.environ[registry.ENV_VAR]
    assert registry.load_world_file(path) == []  # (a second load is a no-op)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_world(_spec(name="toy"))


def test_registration_from_an_entry_point(monkeypatch):
    spec = _spec(name="plugged")
    point = importlib.metadata.EntryPoint("plugged", "some_package.worlds:register",
                                          registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata.EntryPoint, "load", lambda self: (lambda: [spec]))
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: [point] if group == registry.ENTRY_POINT_GROUP else [])
    try:
        registry.load_plugins(force=True)
        assert world_spec("plugged") is spec
    finally:
        registry.unregister_world("plugged")


def test_a_missing_adapter_file_is_an_error():
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        registry.load_world_file("/nowhere.py")


# --- the wrappers ------------------------------------------------------------------------


def test_the_wrapper_completes_observations_and_signals(toy_world):
    env = make_world("toy", 16, 16)
    obs, info = env.reset(seed=3)
    assert obs["rgb"].shape == (16, 16, 3) and obs["depth"].shape == (16, 16)
    assert obs["proprio"].shape == (8,) and not obs["proprio"].any()
    assert obs["instruction"] == "reach the target"
    assert info["is_success"] is False and info["task"] == "toy"
    steps = 0
    while True:
        obs, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        steps += 1
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == 7 and info["outcome"] == "timeout"
    # The expert reaches the target: success ends the episode.
    expert = registry.make_world_expert(env)
    obs, info = env.reset(seed=3)
    for _ in range(7):
        obs, _, terminated, truncated, info = env.step(expert(obs, info))
        if terminated or truncated:
            break
    assert terminated and info["is_success"] and info["outcome"] == "success"


def test_the_time_limit_applies_inside_a_chunk(toy_world):
    """A world with no time limit of its own: rollouts (chunks of 4, refill at 1) end every
    episode at the spec's episode_limit, steps inside chunks included."""
    from embodied_stack.models.policy.interface import ExecutionMode
    from embodied_stack.sim.train.rollouts import WorldPool, run_episodes

    model = _tiny_model({"toy_mover": 2})
    pool = WorldPool("toy", 2, width=16, height=16)
    try:
        eps = run_episodes(model, pool, range(5), ExecutionMode(model.config.chunk_length))
    finally:
        pool.close()
    for ep in eps:
        assert ep.steps <= 7 and (ep.success or ep.steps == 7), (ep.seed, ep.steps, ep.outcome)
        assert ep.task == "toy" and ep.instruction == "reach the target"


def test_builtin_world_through_make_world_is_the_world_itself():
    """tabletop made through the registry steps exactly as the Gymnasium id did."""
    import embodied_stack.sim  # noqa: F401
    from embodied_stack.sim import WORLD_IDS
    from embodied_stack.sim.experts import make_expert

    runs = []
    for make in (lambda: make_world("tabletop", 32, 32),
                 lambda: gym.make(WORLD_IDS["tabletop"], width=32, height=32, with_segmentation=False)):
        env = make()
        expert = make_expert(env)
        obs, info = env.reset(seed=5)
        expert.reset()
        frames = [obs["rgb"].copy()]
        for _ in range(12):
            obs, reward, terminated, truncated, info = env.step(expert(obs, info))
            frames.append((obs["rgb"].copy(), reward, terminated, truncated, info["is_success"]))
            if terminated or truncated:
                break
        runs.append(frames)
        env.close()
    assert len(runs[0]) == len(runs[1])
    for a, b in zip(runs[0][1:], runs[1][1:]):
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


# --- the third-party example: Gymnasium's MuJoCo Reacher-v5 ------------------------------


@pytest.fixture(scope="module")
def reacher():
    registry.load_world_file(REACHER)
    return world_spec("reacher")


def test_reacher_adapter_gives_the_minimum_and_more(reacher):
    env = make_world("reacher")
    try:
        obs, info = env.reset(seed=7)
        assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].dtype == np.uint8
        assert obs["instruction"] == "reach the target" and obs["proprio"].shape == (8,)
        again, _ = env.reset(seed=7)  # a seed fixes the start
        assert np.array_equal(obs["rgb"], again["rgb"]) and np.array_equal(obs["proprio"], again["proprio"])
        # Gymnasium's own 50-step limit is off; the spec's applies through the wrapper.
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated) and steps < 100:
            _, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
            steps += 1
        assert truncated and steps == reacher.episode_limit
    finally:
        env.close()


def test_reacher_expert_succeeds_and_its_lookahead_restores_exactly(reacher):
    from embodied_stack.sim.experts import expert_chunk

    env = make_world("reacher")
    expert = registry.make_world_expert(env)
    try:
        wins = 0
        for seed in range(10):
            trajectories = []
            for lookahead in (False, True):
                obs, info = env.reset(seed=seed)
                states = []
                while True:
                    action = expert(obs, info)
                    if lookahead:
                        chunk, mask = expert_chunk(env, expert, 4, first_action=action)
                        assert chunk.shape == (4, 2) and mask[0]
                    obs, _, terminated, truncated, info = env.step(action)
                    states.append(obs["proprio"].copy())
                    if terminated or truncated:
                        break
                trajectories.append((np.array(states), info["is_success"]))
            assert np.array_equal(trajectories[0][0], trajectories[1][0]), seed
            wins += trajectories[0][1]
        assert wins >= 8, wins
    finally:
        env.close()


def test_reacher_trains_bc_dagger_rl_and_evaluates(reacher, tmp_path):
    """A new model with the reacher embodiment added, through every stage (tiny), then eval."""
    from embodied_stack.sim.eval import main as eval_main
    from embodied_stack.sim.train.trainer import main as train_main

    out = tmp_path / "run"
    model = {"hidden_size": 32, "num_heads": 2, "ffn_size": 64, "num_layers": 2,
             "vision_width": 32, "vision_heads": 2, "aux_dim": 6}
    assert train_main([
        "--out", str(out), "--world-files", REACHER, "--worlds", "reacher", "--init-from", "",
        "--threads", "1", "--pool-size", "2", "--batch-size", "8", "--bc-steps", "4",
        "--model", json.dumps(model), "--demo-episodes", '{"reacher": 2}',
        "--dagger-iterations", "1", "--dagger-episodes", '{"reacher": 2}', "--dagger-steps", "2",
        "--rl-iterations", "1", "--rl-groups", '{"reacher": 1}', "--group-size", "2",
        "--rl-minibatch", "16", "--eval-episodes", "1", "--eval-submodels", "full",
        "--entropy-probe-episodes", '{"reacher": 1}']) == 0
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["embodiments"] == {"arm": 3, "vehicle": 2, "reacher": 2}
    assert json.loads((out / "train_config.json").read_text())["world_files"] == [REACHER]
    results = eval_main(["--world-file", REACHER, "--world", "reacher", "--model", str(out / "model"),
                         "--episodes", "2", "--submodels", "full"])
    assert results["details"]["full_reacher"]["episodes"] == 2
    assert all(0 < s <= reacher.episode_limit for s in [results["details"]["full_reacher"]["mean_steps"]])


def test_eval_refuses_a_model_without_the_worlds_embodiment(reacher, capsys):
    from embodied_stack.sim.eval import main as eval_main

    with pytest.raises(SystemExit):
        eval_main(["--world", "reacher", "--episodes", "1"])
    assert "not 'reacher' of world 'reacher'" in capsys.readouterr().err


def test_new_model_fields_add_the_worlds_embodiment(reacher):
    from embodied_stack.sim.train.run import instruction_tokenizer, model_fields_for_worlds

    fields = model_fields_for_worlds(["reacher"], {"proprio_inputs": {"arm": [0, 1, 2, 6]}})
    assert fields["embodiments"] == {"arm": 3, "vehicle": 2, "reacher": 2}
    assert fields["proprio_inputs"]["reacher"] == list(range(8))
    assert model_fields_for_worlds(["tabletop", "driving"], {"a": 1}) == {"a": 1}  # (as before)
    # The tokenizer reads the given worlds' words only.
    assert "target" in instruction_tokenizer(["reacher"]).vocab
    reacher_words = set(instruction_tokenizer(["reacher"]).vocab)
    both = set(instruction_tokenizer(["tabletop", "driving"]).vocab)
    assert both - reacher_words and set(instruction_tokenizer(["tabletop"]).vocab) < both


def test_launch_gives_a_joints_world_its_layout(reacher):
    from embodied_stack.nodes.launch_graph import argument_defaults, robot_arguments, sim_arguments, sim_nodes

    arguments = sim_arguments(REPO) + robot_arguments(REPO)
    specs = sim_nodes({**argument_defaults(arguments), "world": "reacher", "world_file": REACHER,
                       "perception": "false", "elastic": "false"})
    policy = next(s for s in specs if s.executable == "policy_node")
    extra = policy.parameters[-1]
    assert extra["command"] == "joints" and extra["joint_low"] == [-1.0, -1.0]
    assert extra["proprio_names"][-2:] == ["tip_x", "tip_y"] and extra["control_rate_hz"] == 25.0


def test_a_stop_holds_the_gripper_and_zeroes_the_joints():
    """A joints layout with a gripper channel: healthy commands pass; a stale input stops the
    joints (zeros) while the gripper keeps its last command."""
    from embodied_stack.control.policy_loop import PolicyLoopConfig
    from embodied_stack.control.safety import SafetySupervisor

    config = PolicyLoopConfig(embodiment="pincher", command="joints", joint_low=(-1, -1, 0),
                              joint_high=(1, 1, 0.08), joint_gripper=2)
    safety = SafetySupervisor(config.safety_config())
    safety.watch("camera", 0.0)
    assert safety.note_input("camera", 0.1, 0.1) is None
    out, faults = safety.filter(0.1, np.array([0.5, -0.5, 0.03]))
    assert not faults and np.allclose(out, [0.5, -0.5, 0.03])
    out, faults = safety.filter(1.0, np.array([0.5, -0.5, 0.0]))  # the camera went stale
    assert "stale:camera" in faults and np.allclose(out, [0.0, 0.0, 0.03])
    with pytest.raises(ValueError, match="gripper=3"):
        PolicyLoopConfig(embodiment="pincher", command="joints", joint_low=(-1,) * 3,
                         joint_high=(1,) * 3, joint_gripper=3)


@pytest.fixture
def lonely_world(tmp_path, monkeypatch):
    """The toy world without its expert, registered from an adapter file as "lonely"."""
    monkeypatch.setenv(registry.ENV_VAR, "")
    path = tmp_path / "lonely.py"
    path.write_text(TOY_SOURCE.replace("expert=ToyExpert))", "))").replace('name="toy"', 'name="lonely"'))
    registry.load_world_file(path)
    yield path
    registry.unregister_world("lonely")
    registry._FILES_LOADED.discard(str(path.resolve()))


def test_a_world_without_an_expert_trains_by_rl_only(tmp_path, lonely_world):
    """No expert: bc from live demonstrations and DAgger are refused up front, RL runs."""
    from embodied_stack.sim.train.config import TrainConfig
    from embodied_stack.sim.train.trainer import main as train_main

    with pytest.raises(ValueError, match=r"\['lonely'\] have no scripted expert: stages \['bc', 'dagger'\]"):
        TrainConfig(worlds=("lonely",), stages=("bc", "dagger", "rl"))
    model = {"hidden_size": 32, "num_heads": 2, "ffn_size": 64, "num_layers": 2,
             "vision_width": 32, "vision_heads": 2, "image_size": 16}
    assert train_main([
        "--out", str(tmp_path / "run"), "--worlds", "lonely", "--init-from", "", "--stages", "rl",
        "--threads", "1", "--pool-size", "2", "--model", json.dumps(model),
        "--rl-iterations", "1", "--rl-groups", '{"lonely": 2}', "--group-size", "2",
        "--rl-minibatch", "16", "--eval-episodes", "1", "--eval-submodels", "full",
        "--entropy-probe-episodes", '{"lonely": 1}']) == 0
    # A warm start from a model that does not act for the world's embodiment: one clear line.
    assert train_main(["--out", str(tmp_path / "warm"), "--worlds", "lonely", "--stages", "rl",
                       "--init-from", "default"]) == 2


def test_what_needs_an_expert_or_an_option_refuses_a_world_without_it(tmp_path, lonely_world, capsys):
    """An adapter world without an expert, shifts or a paraphrase grammar: every command that
    would need one says so before it starts anything, and leaves no files behind."""
    from embodied_stack.nodes.cli import main as cli_main
    from embodied_stack.nodes.demo import run_world
    from embodied_stack.nodes.record import main as record_main
    from embodied_stack.sim.eval import main as eval_main

    with pytest.raises(ValueError, match="'lonely' has no expert"):
        run_world("lonely", 1, 0, "expert", "", "full", None)
    assert record_main(["--world", "lonely", "--out", str(tmp_path / "ds"), "--episodes", "1"]) == 2
    assert "has no expert" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.mcap").exists()
    with pytest.raises(SystemExit):
        cli_main(["demo", "--worlds", "lonely", "--backend", "expert", "--out", str(tmp_path / "demo")])
    assert "['lonely'] have no expert to relay" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    with pytest.raises(SystemExit):
        eval_main(["--world", "lonely", "--shift", "camera_offset_m=0.05"])
    assert "world 'lonely' takes no --shift" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main(["--world", "lonely", "--paraphrases", os.path.join(REPO, "bench", "data", "paraphrases.json")])
    assert "rephrases the instructions of ['tabletop', 'driving'], not of world 'lonely'" in capsys.readouterr().err


def test_the_expert_sees_each_lookahead_steps_observation(reacher):
    """Chunk labels ask the expert at every look-ahead step with that step's observation and
    info (images not rendered), so an expert may read obs as the spec says."""
    from embodied_stack.sim.experts import expert_chunk
    from embodied_stack.sim.worlds.registry import make_world_expert

    env = make_world("reacher", 64, 64)
    seen = []

    class Watching:
        def __init__(self, inner):
            self.inner = inner

        def reset(self):
            self.inner.reset()

        def __call__(self, obs, info):
            seen.append((obs, info))
            return self.inner(obs, info)
    expert = Watching(make_world_expert(env))
    obs, info = env.reset(seed=3)
    before = obs["proprio"].copy()
    chunk, mask = expert_chunk(env, expert, 4, obs=obs, info=info)
    assert mask.all() and len(seen) == 4
    assert seen[0][0] is obs and seen[0][0]["rgb"] is not None
    for look_obs, look_info in seen[1:]:
        assert look_obs["rgb"] is None and look_obs["proprio"].shape == before.shape
        assert "is_success" in look_info
    assert not np.allclose(seen[1][0]["proprio"], before)  # (a step ahead: the arm has moved)
    env.close()


@pytest.mark.ros
def test_a_seven_dof_expert_drives_its_world_through_the_graph(tmp_path, monkeypatch):
    """A 7-D joints world's expert over DDS (sim/expert_action carries any number of dims, as
    a JointState), and the recording keeps all seven action dims."""
    from embodied_stack.nodes.record import record
    from embodied_stack.sim.datasets.lerobot_v3 import LeRobotDataset

    monkeypatch.setenv(registry.ENV_VAR, "")
    path = tmp_path / "seven.py"
    source = (TOY_SOURCE.replace("(2,), np.float32", "(7,), np.float32")
              .replace("uniform(-1, 1, 2)", "uniform(-1, 1, 7)")
              .replace('name="toy"', 'name="seven"')
              .replace('EmbodimentSpec("toy_mover", ("vx", "vy"), (-1, -1), (1, 1))',
                       'EmbodimentSpec("arm7", tuple(f"j{i}" for i in range(7)), (-1,) * 7, (1,) * 7)')
              .replace("episode_limit=7", "episode_limit=20"))
    assert source.count("7") > TOY_SOURCE.count("7") + 5, "the toy world's source changed: update"
    path.write_text(source)
    registry.load_world_file(path)
    try:
        report, results = record("seven", 2, 0, tmp_path / "ds", progress=False, timeout_s=90)
        assert [r["success"] for r in results] == [True, True], results
        ds = LeRobotDataset(tmp_path / "ds")
        assert ds.features["action"]["shape"] == [7] and ds.num_episodes == 2
    finally:
        registry.unregister_world("seven")
        registry._FILES_LOADED.discard(str(path.resolve()))


def test_a_world_with_more_than_eight_proprio_entries_trains_a_model_that_wide(tmp_path, monkeypatch):
    """Twelve proprio entries (a 6-DoF arm's angles and velocities, say): the wrapper keeps all
    twelve, a new model reads twelve (proprio_dim 12) and evaluates; a warm start from the
    shipped 8-wide model, and the model fed more than it reads, are errors saying so."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLAConfig
    from embodied_stack.sim.eval import main as eval_main
    from embodied_stack.sim.train.config import TrainConfig
    from embodied_stack.sim.train.run import build_model
    from embodied_stack.sim.train.trainer import main as train_main

    monkeypatch.setenv(registry.ENV_VAR, "")
    path = tmp_path / "wide.py"
    source = (TOY_SOURCE.replace('name="toy"', 'name="wide"')
              .replace('return {"rgb": rgb}',
                       'return {"rgb": rgb, "proprio": np.r_[self.x, self.target, np.arange(8.0)]}')
              .replace('instruction="reach the target",',
                       'instruction="reach the target", proprio_names=tuple(f"p{i}" for i in range(12)),'))
    assert source.count("p{i}") == 1 and "np.arange(8.0)" in source, "the toy world's source changed: update"
    path.write_text(source)
    registry.load_world_file(path)
    try:
        spec = world_spec("wide")
        assert spec.proprio_width == 12 and spec.proprio_layout[-1] == "p11"
        env = make_world("wide", 16, 16)
        obs, _ = env.reset(seed=0)
        assert obs["proprio"].shape == (12,) and obs["proprio"][-1] == 7.0
        env.close()
        out = tmp_path / "run"
        model = {"hidden_size": 32, "num_heads": 2, "ffn_size": 64, "num_layers": 2,
                 "vision_width": 32, "vision_heads": 2, "image_size": 16}
        assert train_main([
            "--out", str(out), "--worlds", "wide", "--init-from", "", "--stages", "bc",
            "--threads", "1", "--pool-size", "2", "--batch-size", "8", "--bc-steps", "2",
            "--model", json.dumps(model), "--demo-episodes", '{"wide": 2}', "--eval-episodes", "0"]) == 0
        assert json.loads((out / "model" / "config.json").read_text())["proprio_dim"] == 12
        results = eval_main(["--world", "wide", "--model", str(out / "model"), "--episodes", "2",
                             "--submodels", "full"])
        assert results["details"]["full_wide"]["episodes"] == 2
        narrow = tmp_path / "narrow"  # (acts for the world's embodiment, reads 8 entries)
        _tiny_model({"toy_mover": 2}).save_pretrained(narrow)
        with pytest.raises(ValueError, match="reads 8 proprio entries, worlds {'wide': 12} give more"):
            build_model(TrainConfig(worlds=("wide",), stages=("rl",), init_from=str(narrow)))
        with pytest.raises(SystemExit):
            eval_main(["--world", "wide", "--model", str(narrow), "--episodes", "1"])
        assert ElasticVLAConfig().proprio_dim == 8
    finally:
        registry.unregister_world("wide")
        registry._FILES_LOADED.discard(str(path.resolve()))


def test_proprio_names_are_checked():
    with pytest.raises(ValueError, match="at most 64"):
        _spec(name="w", proprio_names=tuple(f"p{i}" for i in range(65)))
    with pytest.raises(ValueError, match="repeat a name"):
        _spec(name="w", proprio_names=("a", "a"))
    with pytest.raises(ValueError, match=r"must be indices in \[0, 10\)"):
        _spec(name="w", proprio_names=tuple(f"p{i}" for i in range(10)),
              train_defaults={"proprio_inputs": [10]})


@pytest.mark.parametrize("rgb, quoted", [
    ("np.zeros((16, 16, 4), np.uint8)", r"\(16, 16, 4\) uint8"),
    ("np.zeros((16, 16, 3), np.float32)", r"\(16, 16, 3\) float32"),
    ("[[0]]", "list"),
])
def test_an_image_the_policy_cannot_take_is_an_error_naming_it(tmp_path, monkeypatch, rgb, quoted):
    """RGBA, float or non-array images from an adapter: a clear error at reset, not a failure
    deep inside the model's preprocessing."""
    monkeypatch.setenv(registry.ENV_VAR, "")
    path = tmp_path / "badimage.py"
    path.write_text(TOY_SOURCE.replace('name="toy"', 'name="badimage"')
                    .replace('return {"rgb": rgb}', f'return {{"rgb": {rgb}}}'))
    registry.load_world_file(path)
    try:
        env = make_world("badimage", 16, 16)
        with pytest.raises(ValueError, match=f"obs\\['rgb'\\] must be an \\(H, W, 3\\) uint8 array, got .*{quoted}"):
            env.reset(seed=0)
    finally:
        registry.unregister_world("badimage")
        registry._FILES_LOADED.discard(str(path.resolve()))


def test_reading_the_registry_loads_no_simulator():
    """Specs are read by nodes that never step a world (the policy node's proprio layout):
    registering and reading every world, the Reacher example's too, must not import MuJoCo
    (nor probe OpenGL)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from embodied_stack.sim.worlds import registered_worlds, world_spec\n"
            "names = registered_worlds()\n"
            "[world_spec(n).proprio_layout for n in names]\n"
            "print(len(names), 'mujoco' in sys.modules)\n")
    env = {**os.environ, registry.ENV_VAR: REACHER}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    count, loaded = out.stdout.split()
    assert int(count) >= 2 and loaded == "False", out.stdout
