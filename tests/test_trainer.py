"""The trainer (sim/train): expert look-ahead labels, execution mode, config checks, a smoke
run of every stage through the CLI, and kill-and-resume giving the same parameters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import embodied_stack.sim  # noqa: F401  (registers the worlds)
from embodied_stack.models.policy.interface import ExecutionMode
from embodied_stack.sim import WORLD_IDS
from embodied_stack.sim.experts import expert_chunk, make_expert
from embodied_stack.sim.train.config import TrainConfig
from embodied_stack.sim.train.trainer import train

#: A tiny model and tiny budgets: every stage runs, in seconds.
TINY = dict(
    init_from="", threads=1, pool_size=4, batch_size=16, bc_steps=30, checkpoint_every=5,
    model={"hidden_size": 32, "num_heads": 2, "ffn_size": 64, "num_layers": 2,
           "vision_width": 32, "vision_heads": 2, "depth_encoding": "log",
           "depth_max_m": 100.0, "aux_dim": 6},
    demo_episodes={"tabletop": 4, "driving": 2},
    dagger_iterations=1, dagger_episodes={"tabletop": 3, "driving": 1}, dagger_steps=10,
    rl_iterations=2, rl_groups={"tabletop": 2, "driving": 1}, group_size=3, rl_minibatch=32,
    eval_episodes=2, entropy_target=0.0,  # 0: hold the entropy the rl stage starts from
    entropy_probe_episodes={"tabletop": 1, "driving": 1},
)


@pytest.mark.parametrize("world", ["tabletop", "driving"])
def test_expert_lookahead_restores_the_world_exactly(world):
    """Labelling a state with the expert's chunk must not change the episode: the same
    actions give the same trajectory with and without look-ahead."""
    env = gym.make(WORLD_IDS[world], width=32, height=32, with_segmentation=False)
    expert = make_expert(env)
    try:
        runs = []
        for lookahead in (False, True):
            obs, info = env.reset(seed=3)
            expert.reset()
            states = []
            for _ in range(15):
                action = expert(obs, info)
                if lookahead:
                    chunk, mask = expert_chunk(env, expert, 4, first_action=action)
                    assert chunk.shape == (4, env.action_space.shape[0])
                    # Valid up to the episode's end, never after it.
                    assert mask[0] and np.all(np.diff(mask.astype(int)) <= 0)
                    np.testing.assert_array_equal(chunk[0], action)
                obs, _, terminated, truncated, info = env.step(action)
                states.append(obs["proprio"].copy())
                if terminated or truncated:
                    break
            runs.append(np.array(states))
        assert runs[0].shape == runs[1].shape
        np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)
    finally:
        env.close()


def test_expert_chunk_is_the_experts_own_future():
    """A chunk label equals what the expert does when it executes those steps itself."""
    env = gym.make(WORLD_IDS["driving"], width=32, height=32, with_segmentation=False)
    expert = make_expert(env)
    try:
        obs, info = env.reset(seed=11)
        chunk, _ = expert_chunk(env, expert, 4)
        executed = []
        for _ in range(4):
            a = expert(obs, info)
            executed.append(a)
            obs, *_ , info = env.step(a)
        np.testing.assert_allclose(chunk, np.array(executed), atol=1e-6)
    finally:
        env.close()


def test_execution_mode_matches_the_policy_node():
    assert ExecutionMode(4, refill_at=1).steps_per_inference == 3
    assert ExecutionMode(4, refill_at=0).steps_per_inference == 4
    assert ExecutionMode(4, refill_at=1, execute_steps=2).steps_per_inference == 1
    assert ExecutionMode(4, refill_at=8).steps_per_inference == 1  # never zero
    with pytest.raises(ValueError, match="refill_at"):
        ExecutionMode(4, refill_at=-1)


@pytest.mark.parametrize("bad, match", [
    ({"stages": ("bc", "ppo")}, "stages"),
    ({"loss": "ppo"}, "loss"),
    ({"submodel_probs": {"2/3": 1.0}}, "submodel_probs"),
    ({"lr": 2.0}, "lr"),
    ({"group_size": 1, "loss": "adpo"}, "group_size"),
    ({"worlds": ("kitchen",)}, "kitchen"),
    ({"workers": -1}, "workers"),
    ({"dagger_episodes": {"tabletop": 501}}, "dagger_episodes"),
    ({"rl_groups": {"driving": 501}}, "rl_groups"),
    ({"rl_iterations": 271}, "rl_iterations"),
    ({"keypoint_teacher_forcing": 1.5}, "keypoint_teacher_forcing"),
    ({"entropy_measure": "rollouts"}, "entropy_measure"),
    ({"entropy_probe_episodes": {"tabletop": 0, "driving": 0}}, "entropy_probe_episodes"),
    ({"entropy_probe_episodes": {"tabletop": 51}}, "entropy_probe_episodes"),
    ({"entropy_high_prob": 1.0}, "entropy_high_prob"),
    ({"dagger_iterations": 11}, "dagger_iterations"),
    ({"shift": "camera_offset_m=0.9"}, "camera_offset_m"),
    ({"shift": "zoom=2"}, "zoom"),
    ({"paraphrase_share": 1.5}, "paraphrase_share"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_robust_training_randomises_every_training_episode_but_not_validation(tmp_path):
    """`shift` and `paraphrase_share` (config/train/robust.yaml): the demonstrations are
    recorded in the randomised world with paraphrased instructions (the expert still acts on
    the task), the rollouts the stages step are randomised, validation's are the plain worlds,
    and a new model's vocabulary holds the generator's words."""
    from embodied_stack.sim.train import demos
    from embodied_stack.sim.train.run import Run

    shift = "camera_offset_m=0.1,light_scale=0.5,distractors=2"
    path = demos.collect(demos.DemoConfig(world="tabletop", episodes=6, shift=shift, paraphrase_share=1.0),
                         tmp_path / "demos")
    data = demos.load(path)
    words = {w for text in set(data["instruction"].tolist()) for w in text.lower().split()}
    assert not words <= {"touch", "push", "the", "to", "left", "right", "forward", "backward", "red", "green",
                         "blue", "yellow", "cube", "ball", "cylinder", "object"}, words
    assert data["episode_success"].mean() >= 0.5  # the expert acts on the task, whatever the words
    plain = demos.load(demos.collect(demos.DemoConfig(world="tabletop", episodes=1), tmp_path / "plain"))
    assert not np.array_equal(data["rgb"][0], plain["rgb"][0])  # same seed, moved camera and dimmer light
    cfg = TrainConfig(worlds=("tabletop",), shift=shift, paraphrase_share=0.5, pool_size=2)
    run = Run(cfg, tmp_path / "run", resume=False)
    try:
        assert run.rollouts.pools["tabletop"].envs[0].unwrapped.shift is not None
        assert run.validation_rollouts.pools["tabletop"].envs[0].unwrapped.shift is None
        rewrite = run.paraphraser("tabletop")
        rewritten = [rewrite(seed, "touch the red cube") for seed in range(400)]
        assert rewritten == [rewrite(seed, "touch the red cube") for seed in range(400)]  # per seed
        assert 0.4 < np.mean([r != "touch the red cube" for r in rewritten]) < 0.6
        assert {"crimson", "kindly"} <= set(run.model.tokenizer.vocab)
    finally:
        run.close()


def test_configs_of_earlier_versions_still_read():
    """A saved train_config.json or YAML file of an earlier version: a renamed field reads under
    its new name, a removed one is dropped; an unknown field is still an error."""
    cfg = TrainConfig.from_dict({"readout_teacher_forcing": 0.25, "point_weight": 1.0})
    assert cfg.keypoint_teacher_forcing == 0.25
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['pointing_weight'\]"):
        TrainConfig.from_dict({"pointing_weight": 1.0})


def test_warm_start_refuses_shape_changes(tmp_path):
    with pytest.raises(ValueError, match="hidden_size"):
        train(TrainConfig(init_from="default", model={"hidden_size": 64}), tmp_path / "run")


def test_warm_start_may_change_how_images_are_normalised():
    """rgb_normalization turns pixels into tensors only: a warm start keeps every weight."""
    from embodied_stack.models.policy import load_default_policy
    from embodied_stack.sim.train.run import build_model

    model = build_model(TrainConfig(init_from="default", model={"rgb_normalization": "image"}))
    assert model.config.rgb_normalization == "image"
    shipped = load_default_policy().state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())


def _params(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.slow
def test_smoke_run_every_stage_then_eval(tmp_path):
    """One short run through `embodied-stack train` (bc -> dagger -> rl), then
    `embodied-stack eval` on its model: the artefacts and the logged figures exist."""
    from embodied_stack.nodes.cli import main as cli

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in TINY.items()}))
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        # The shaped return always varies within a group (an untrained model never succeeds).
        assert cli(["train", "--out", str(out), "--config", str(config),
                    "--loss", "adpo+entropic", "--reward", "return", "--frontier", "false"]) == 0
    finally:
        torch.set_num_threads(threads)
    for name in ("model/config.json", "model/model.safetensors", "checkpoint.pt",
                 "train_config.json"):
        assert (out / name).is_file(), name
    assert list((out / "dagger").glob("iter_000_*.npz"))
    assert list((out / "tb").iterdir()), "no TensorBoard events"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    log = json.loads(state["log"])
    rl = [e for e in log if e["stage"] == "rl" and "zero_variance_groups" in e]
    assert len(rl) == 2 and all("rl_steps_per_s" in e and e["kl_ref"] >= 0 for e in rl)
    assert rl[0]["kl_ref"] < 1e-6  # the first rollouts come from the reference itself
    updates = [e for e in log if e["stage"] == "rl" and "alpha" in e]
    assert updates, "no RL update was logged (every group had zero variance?)"
    assert all(-1.0 <= e["alpha"] <= 1.0 and "entropy" in e and "kd" in e for e in updates)
    # The controller's entropy is the probe's (fixed states); the update batch's is logged too.
    assert all("entropy_batch" in e for e in updates)
    # The measured target: the starting policy's token entropy (an untrained one: ~ln 256).
    targets = [e["entropy_target"] for e in updates]
    assert max(targets) - min(targets) < 1e-9 and 3.0 < targets[0] <= np.log(256) + 1e-3
    assert json.loads(state["progress"])["stage"] == "done"
    assert any("aux" in e for e in log if e["stage"] == "bc"), "auxiliary loss not trained"
    # A second `train` into the same folder without --resume must refuse, losing nothing.
    with pytest.raises(FileExistsError):
        cli(["train", "--out", str(out), "--config", str(config)])
    result = tmp_path / "eval.json"
    assert cli(["eval", "--model", str(out / "model"), "--episodes", "2", "--submodels",
                "full", "1/2", "--json", str(result)]) == 0
    figures = json.loads(result.read_text())
    for key in ("success_full_tabletop", "success_half_driving"):
        assert 0.0 <= figures[key] <= 1.0
        lo, hi = figures[key.replace("success", "ci95")]
        assert 0.0 <= lo <= figures[key] <= hi <= 1.0
    # the file names the command that wrote it (every quoted figure must have one)
    assert figures["command"] == ("embodied-stack eval --model " + str(out / "model")
                                  + " --episodes 2 --submodels full 1/2 --json " + str(result))


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_parameters(tmp_path):
    """A run killed (SIGKILL) after its first checkpoint and resumed ends with exactly the
    parameters of an uninterrupted run of the same config and seed."""
    cfg_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY.items()}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg_dict))

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "embodied_stack.sim.train.trainer", "--out",
                             str(killed), "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (killed / "checkpoint.pt").exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    progress = json.loads(torch.load(killed / "checkpoint.pt", weights_only=True)["progress"])
    assert progress["stage"] != "done", "killed too late to test resuming"

    threads = torch.get_num_threads()
    try:
        train(TrainConfig(**TINY), killed, resume=True)
        train(TrainConfig(**TINY), tmp_path / "straight")
    finally:
        torch.set_num_threads(threads)
    a, b = _params(killed / "model"), _params(tmp_path / "straight" / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def _arm_observations(n: int) -> list:
    """n random 64x64 tabletop-like observations (seeded)."""
    from embodied_stack.models.policy.interface import Observation

    rng = np.random.default_rng(0)
    return [Observation(rgb=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                        instruction="touch the red cube", proprio=np.zeros(8, np.float32),
                        embodiment="arm", depth=rng.random((64, 64), dtype=np.float32))
            for _ in range(n)]


def test_warm_start_can_add_the_auxiliary_head(tmp_path):
    """init_from a model without an auxiliary head, aux_dim 6: the old weights carry over
    unchanged and a fresh head is added; the nested permutation keeps its outputs."""
    from embodied_stack.models.elastic.submodels import calibrate_and_permute
    from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
    from embodied_stack.sim.train.run import build_model, instruction_tokenizer

    small = {k: v for k, v in TINY["model"].items() if k != "aux_dim"}
    torch.manual_seed(0)
    old = ElasticVLA(ElasticVLAConfig(**small), instruction_tokenizer(("tabletop", "driving")))
    old.save_pretrained(tmp_path / "old")
    model = build_model(TrainConfig(init_from=str(tmp_path / "old"), model={"aux_dim": 6}))
    assert model.config.aux_dim == 6 and model.aux_head is not None
    for k, v in old.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    batch = model.obs_to_batch(_arm_observations(4))
    batch.update(action_tokens=torch.zeros(4, model.config.num_action_tokens, dtype=torch.long),
                 aux_targets=torch.randn(4, 6, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        _, logs = model(batch)
        calibrate_and_permute(model, [batch])
        _, logs2 = model(batch)
    assert logs2["aux"] == pytest.approx(logs["aux"], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(logs2["action_logits"], logs["action_logits"], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_warm_start_adds_the_target_keypoint_and_bc_trains_it(tmp_path):
    """init_from a model without the keypoint, then target_keypoint on: the old weights carry
    over and the model still acts the same (the keypoint enters through a zero projection); a
    short bc run trains it (the projection moves away from zero) and logs its loss."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
    from embodied_stack.sim.train.run import build_model, instruction_tokenizer

    torch.manual_seed(0)
    old = ElasticVLA(ElasticVLAConfig(**TINY["model"]), instruction_tokenizer(("tabletop", "driving")))
    old.save_pretrained(tmp_path / "old")
    cfg = TrainConfig(**{**TINY, "init_from": str(tmp_path / "old"), "stages": ("bc",),
                         "bc_steps": 12, "model": {"target_keypoint": True}})
    model = build_model(cfg)
    assert model.config.target_keypoint
    batch = model.obs_to_batch(_arm_observations(3))
    with torch.no_grad():
        torch.testing.assert_close(model.batch_logits(batch), old.batch_logits(batch))
    threads = torch.get_num_threads()
    try:
        train(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    trained = _params(tmp_path / "run" / "model")
    assert trained["keypoint_proj.weight"].abs().max() > 0
    log = json.loads(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["log"])
    bc = [e for e in log if e["stage"] == "bc" and "keypoint" in e]
    assert bc and all(0.0 <= e["keypoint_acc"] <= 1.0 for e in bc), "keypoint loss not logged"


def test_warm_start_widens_the_keypoint_mlp_for_the_instruction(tmp_path):
    """init_from a keypoint model, then keypoint_instruction on: the keypoint MLP's first
    layer keeps its weights on the old inputs and gets zeros on the words, so the model acts
    exactly as before."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
    from embodied_stack.sim.train.run import build_model, instruction_tokenizer

    torch.manual_seed(0)
    model_cfg = {**TINY["model"], "target_keypoint": True}
    old = ElasticVLA(ElasticVLAConfig(**model_cfg), instruction_tokenizer(("tabletop", "driving")))
    with torch.no_grad():
        old.keypoint_proj.weight.normal_(0.0, 0.5)  # as trained: the keypoint reaches the actions
        old.refresh_views()
    old.save_pretrained(tmp_path / "old")
    cfg = TrainConfig(**{**TINY, "init_from": str(tmp_path / "old"),
                         "model": {**model_cfg, "keypoint_instruction": True}})
    model = build_model(cfg)
    w_old, w_new = old.keypoint_in[0].weight, model.keypoint_in[0].weight
    assert w_new.shape[1] == w_old.shape[1] + model.keypoint_words.embedding_dim
    torch.testing.assert_close(w_new[:, :w_old.shape[1]], w_old)
    assert not w_new[:, w_old.shape[1]:].any()
    batch = model.obs_to_batch(_arm_observations(3))
    with torch.no_grad():
        torch.testing.assert_close(model.batch_logits(batch), old.batch_logits(batch))


def test_warm_start_adds_the_reference_frame_channels_with_zero_weights(tmp_path):
    """init_from a model, then reference_frame on: the vision stem's first convolution keeps
    its weights on the frame's channels and gets zeros on the reference's, so the model acts
    exactly as before whatever the reference shows; the target keypoint still reads the
    current frame only."""
    import dataclasses

    from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
    from embodied_stack.sim.train.run import build_model, instruction_tokenizer

    torch.manual_seed(0)
    model_cfg = {**TINY["model"], "vision_stem": "conv", "target_keypoint": True}
    old = ElasticVLA(ElasticVLAConfig(**model_cfg), instruction_tokenizer(("tabletop", "driving")))
    old.save_pretrained(tmp_path / "old")
    cfg = TrainConfig(**{**TINY, "init_from": str(tmp_path / "old"),
                         "model": {**model_cfg, "reference_frame": True}})
    model = build_model(cfg)
    w_old, w_new = old.patch_embed[0].weight, model.patch_embed[0].weight
    assert w_new.shape[1] == 2 * w_old.shape[1] == 2 * model.config.frame_channels
    torch.testing.assert_close(w_new[:, :w_old.shape[1]], w_old)
    assert not w_new[:, w_old.shape[1]:].any()
    obs = _arm_observations(4)
    other = [dataclasses.replace(o, reference_rgb=r.rgb, reference_depth=r.depth)
             for o, r in zip(obs, obs[::-1])]
    with torch.no_grad():
        before = old.batch_logits(old.obs_to_batch(obs))
        for batch in (model.obs_to_batch(obs), model.obs_to_batch(other)):
            assert batch["pixels"].shape[1] == 2 * model.config.frame_channels
            torch.testing.assert_close(model.batch_logits(batch), before)


def test_first_rows_points_every_state_at_its_episodes_first_state():
    from embodied_stack.sim.train.supervised import first_rows

    episode = np.array([3, 3, 3, 0, 0, 7, 3, 3])  # ids may repeat, episodes are contiguous
    assert first_rows(episode).tolist() == [0, 0, 0, 3, 3, 5, 6, 6]


def test_dagger_from_adds_earlier_runs_shards_to_the_aggregate(tmp_path):
    """dagger_from: every DAgger shard of the named runs joins this run's buffer when it is
    built (at the start and on --resume), whatever its iteration; a run folder without
    shards is refused up front."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLAConfig
    from embodied_stack.sim.train.run import Run
    from embodied_stack.sim.train.supervised import load_dagger_shards

    n, T = 5, ElasticVLAConfig().chunk_length
    shard = {"rgb": np.zeros((n, 64, 64, 3), np.uint8), "depth": np.ones((n, 64, 64), np.float16),
             "proprio": np.zeros((n, 8), np.float32), "aux": np.zeros((n, 8), np.float32),
             "chunk": np.zeros((n, T, 3), np.float32), "chunk_mask": np.ones((n, T), bool),
             "instruction": np.array(["touch the red cube"] * n), "episode": np.arange(n),
             "episode_success": np.ones(n, bool)}
    (tmp_path / "earlier" / "dagger").mkdir(parents=True)
    for it in (0, 3):
        np.savez(tmp_path / "earlier" / "dagger" / f"iter_00{it}_tabletop.npz", **shard)
    with pytest.raises(ValueError, match="holds no DAgger shards"):
        TrainConfig(**{**TINY, "dagger_from": (str(tmp_path),)})
    cfg = TrainConfig(**{**TINY, "dagger_from": (str(tmp_path / "earlier"),)})
    run = Run(cfg, tmp_path / "run", resume=False)
    try:
        load_dagger_shards(run, below=0)
        assert run.buffer.size("tabletop") == 2 * n
    finally:
        run.close()


def test_keypoint_targets_are_the_named_objects_centre():
    """features()[6:8] projects the expert's chosen target with the camera model: the pixel
    lies on that object in the segmentation image, and the buffer hands it to the keypoint as
    its target (u, v) (NaN where there is nothing to find)."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
    from embodied_stack.sim.train.run import instruction_tokenizer
    from embodied_stack.sim.train.supervised import StateBuffer

    env = gym.make(WORLD_IDS["tabletop"], with_segmentation=True)
    for seed in range(400, 415):
        obs, info = env.reset(seed=seed)
        expert = make_expert(env)
        expert.reset()
        expert(obs, info)
        u, v = expert.features()[6:8] * 64
        assert info["segmentation"][int(v), int(u)] == expert._target, seed
    env.close()
    model = ElasticVLA(ElasticVLAConfig(hidden_size=32, num_heads=2, ffn_size=64, num_layers=2,
                                        vision_width=16, aux_dim=6, target_keypoint=True),
                       instruction_tokenizer(("tabletop", "driving")))
    aux = np.zeros((3, 8), np.float32)
    aux[0, 6:8] = (0.30, 0.60)
    aux[1, 6:8] = np.nan  # nothing to find
    aux[2, 6:8] = (0.999, 0.0)
    d = {"rgb": np.zeros((3, 64, 64, 3), np.uint8), "depth": np.zeros((3, 64, 64), np.float16),
         "proprio": np.zeros((3, 8), np.float32), "aux": aux,
         "chunk": np.zeros((3, 4, 3), np.float32), "chunk_mask": np.ones((3, 4), bool),
         "instruction": np.array(["touch the red cube"] * 3)}
    buf = StateBuffer(model)
    buf.add("tabletop", d)
    batch = buf.sample(3, torch.Generator().manual_seed(0), "cpu")
    assert len(buf) == 3 and set(batch) >= {"action_tokens", "loss_mask", "aux_targets", "keypoint_uv"}
    uv = buf.parts["tabletop"][0]["keypoint_uv"]
    np.testing.assert_allclose(uv[[0, 2]].numpy(), aux[[0, 2], 6:8])
    assert torch.isnan(uv[1]).all()


def test_keypoint_targets_match_the_features_and_older_data_is_projected():
    """The keypoint is trained on the target centre's (u, v): read from features()[6:8], or,
    for data recorded with 6 features, projected from target - fingertip with the world's
    camera; both agree. NaN where there is nothing (driving's expert gives none, outside the
    image). Any world's recorded positions are read (Meta-World's expert gives them); only
    the tabletop's older data is projected."""
    from embodied_stack.sim.train.supervised import target_image_position

    env = gym.make(WORLD_IDS["tabletop"])
    rows = []
    for seed in range(420, 430):
        obs, info = env.reset(seed=seed)
        expert = make_expert(env)
        expert.reset()
        expert(obs, info)
        rows.append((obs["proprio"], expert.features()))
    env.close()
    proprio = np.stack([p for p, _ in rows])
    aux8 = np.stack([f for _, f in rows])
    full = target_image_position("tabletop", {"proprio": proprio, "aux": aux8}, slice(0, 10))
    older = target_image_position("tabletop", {"proprio": proprio, "aux": aux8[:, :6]}, slice(0, 10))
    np.testing.assert_allclose(older, full, atol=1e-4)
    np.testing.assert_allclose(full, aux8[:, 6:8])
    aux8[3, 6:8] = (1.2, 0.5)  # outside the image
    assert np.isnan(target_image_position("tabletop", {"proprio": proprio, "aux": aux8}, slice(0, 10))[3]).all()
    np.testing.assert_allclose(target_image_position("metaworld_push", {"proprio": proprio, "aux": aux8},
                                                     slice(4, 7)), aux8[4:7, 6:8])
    assert np.isnan(target_image_position("driving", {"proprio": proprio, "aux": aux8[:, :6]}, slice(2, 5))).all()
    aux8[:, 6:8] = np.nan  # (what the driving expert's features hold there)
    assert np.isnan(target_image_position("driving", {"proprio": proprio, "aux": aux8}, slice(2, 5))).all()


def test_screening_gives_the_groups_to_the_seeds_the_greedy_policy_fails():
    from types import SimpleNamespace

    from embodied_stack.sim.train.rl import rl_seeds, screen_seeds
    from embodied_stack.sim.train.rollouts import Episode

    solved = {20_001, 20_002, 20_004, 20_005, 20_006, 20_007}
    calls = []

    def rollouts(model, world, seeds, mode, **kw):
        calls.append((list(seeds), kw))
        return [Episode(world=world, seed=s, success=s in solved, steps=10) for s in seeds]

    run = SimpleNamespace(model=None, mode=None, rollouts=rollouts, paraphraser=lambda world: None)
    cfg = TrainConfig(rl_groups={"tabletop": 2, "driving": 1}, rl_screen=4)
    candidates = rl_seeds(cfg, 0, 0)
    assert candidates == list(range(20_000, 20_008))
    assert rl_seeds(cfg, 1, 1) == [21_500, 21_501, 21_502, 21_503]  # 500 seeds per world block
    seeds, stats = screen_seeds(run, "tabletop", candidates, 2)
    assert seeds == [20_000, 20_003]          # the two failures, not the first two seeds
    assert [c[0] for c in calls] == [candidates]      # one greedy try each (no sampling)
    assert set(calls[0][1]) == {"progress", "rewrite"} and calls[0][1]["rewrite"] is None
    assert stats == {"screen_failed_tabletop": 2 / 8, "screen_env_steps_tabletop": 80}
    seeds, _ = screen_seeds(run, "tabletop", candidates, 3)
    assert seeds == [20_000, 20_001, 20_003]  # then the rest in seed order
    calls.clear()
    assert screen_seeds(run, "driving", [20_500], 1) == ([20_500], {}) and not calls
    with pytest.raises(ValueError, match="rl_screen"):
        TrainConfig(rl_groups={"tabletop": 26, "driving": 4}, rl_screen=20)


def test_bool_flags_reject_a_misspelt_value(capsys):
    from embodied_stack.sim.train.trainer import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", "unused", "--frontier", "flase"])
    assert exc.value.code == 2
    assert "'flase' is not a boolean" in capsys.readouterr().err


def test_resume_with_changed_settings_records_them(tmp_path):
    """Resuming with a flag that changes the run (here one more bc step) rewrites the run's
    train_config.json and lists the change in run_info.json, so the files say what trained."""
    cfg = TrainConfig(**{**TINY, "stages": ("bc",), "bc_steps": 6, "eval_episodes": 0})
    train(cfg, tmp_path / "run")
    # An unfinished run to resume: the checkpoint after step 6 of 6, stage still bc.
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    progress = json.loads(state["progress"])
    progress.update(stage="bc")
    state["progress"] = json.dumps(progress)
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    train(TrainConfig(**{**TINY, "stages": ("bc",), "bc_steps": 8, "eval_episodes": 0}),
          tmp_path / "run", resume=True)
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["bc_steps"] == 8
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    [change] = info["resumed_with_changes"]
    assert change["changed"] == {"bc_steps": {"was": 6, "now": 8}} and change["stage"] == "bc"
