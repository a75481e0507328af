"""`embodied-stack train --dataset PATH`: behaviour cloning on a LeRobotDataset v3's recorded
actions, binned over the dataset's action min/max (meta/stats.json), with no live expert."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import embodied_stack.sim  # noqa: F401  (registers the worlds)
from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig, InstructionTokenizer
from embodied_stack.sim import WORLD_IDS
from embodied_stack.sim.datasets.from_bag import dataset_features
from embodied_stack.sim.datasets.lerobot_v3 import LeRobotDataset, write_dataset
from embodied_stack.sim.experts import make_expert
from embodied_stack.sim.train import demos
from embodied_stack.sim.train.config import TrainConfig
from embodied_stack.sim.worlds import PROPRIO_NAMES


def _expert_episodes(world: str, seeds, max_steps: int = 40):
    """Offline expert episodes as dataset episodes (the layout `embodied-stack record` writes)."""
    env = gym.make(WORLD_IDS[world], width=64, height=64, with_segmentation=False)
    expert = make_expert(env)
    try:
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            expert.reset()
            cols: dict[str, list] = {k: [] for k in ("rgb", "depth", "state", "action")}
            for _ in range(max_steps):
                action = np.asarray(expert(obs, info), np.float32)
                cols["rgb"].append(obs["rgb"])
                cols["depth"].append(obs["depth"][..., None].astype(np.float32))
                cols["state"].append(obs["proprio"].astype(np.float32))
                cols["action"].append(action)
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    break
            yield ({"observation.images.color": np.stack(cols["rgb"]),
                    "observation.depth": np.stack(cols["depth"]),
                    "observation.state": np.stack(cols["state"]),
                    "action": np.stack(cols["action"])}, str(obs["instruction"]))
    finally:
        env.close()


@pytest.fixture(scope="module")
def driving_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "driving"
    write_dataset(root, _expert_episodes("driving", [4, 5]), 10,
                  dataset_features("driving", 64, 64, PROPRIO_NAMES["driving"]),
                  robot_type="embodied_stack/driving", progress=False)
    return root


def test_action_range_maps_actions_to_bins_and_back():
    cfg = ElasticVLAConfig(hidden_size=32, num_heads=2, ffn_size=64, num_layers=1, vision_width=32,
                           vision_heads=2, action_range={"vehicle": [[-0.2, -1.0], [0.4, 0.5]]})
    model = ElasticVLA(cfg, InstructionTokenizer.from_words(["keep", "lane"]))
    x = torch.tensor([[[-0.2, -1.0], [0.1, 0.0], [0.4, 0.5], [0.0, 0.25]]])
    ids = model.actions_to_tokens(x, "vehicle")
    back = model.tokens_to_actions(ids, 2, ["vehicle"])
    width = torch.tensor([0.6, 1.5]) / cfg.action_bins  # a bin, in action units
    assert torch.all((back - x).abs() <= width)
    # The range uses every bin: its ends land in the first and the last.
    assert ids.reshape(4, 3)[0, 0] == 0 and ids.reshape(4, 3)[2, 0] == cfg.action_bins - 1
    # Without a range (the arm here) actions are in [-1, 1] as before.
    arm = model.actions_to_tokens(torch.zeros(1, 4, 3), "arm")
    assert torch.equal(arm, model.actions_to_tokens(torch.zeros(1, 4, 3)))
    with pytest.raises(ValueError, match="action_range"):
        ElasticVLAConfig(action_range={"vehicle": [[0.0, 0.0], [0.0, 1.0]]})


def test_dataset_states_are_labelled_with_the_recorded_future_actions(driving_dataset):
    data = demos.load_dataset(driving_dataset, "driving", chunk_length=4)
    ds = LeRobotDataset(driving_dataset)
    actions = np.concatenate([ep.frames["action"] for ep in ds])
    n0 = ds.episodes[0]["length"]
    assert len(data["rgb"]) == len(actions) == data["chunk"].shape[0]
    np.testing.assert_array_equal(data["chunk"][0], actions[:4])
    # The last states of an episode: the chunk stops at the episode's end.
    assert data["chunk_mask"][n0 - 2].tolist() == [True, True, False, False]
    np.testing.assert_array_equal(data["chunk"][n0 - 1, 0], actions[n0 - 1])
    assert data["depth"].dtype == np.float16 and data["rgb"].shape[1:] == (64, 64, 3)
    assert set(data["instruction"]) == set(ds.tasks)


def test_config_takes_the_world_and_the_action_range_from_the_dataset(driving_dataset):
    cfg = TrainConfig(dataset=str(driving_dataset))
    assert cfg.worlds == ("driving",)
    stats = json.loads((driving_dataset / "meta/stats.json").read_text())["action"]
    assert cfg.model["action_range"]["vehicle"] == [stats["min"], stats["max"]]
    with pytest.raises(ValueError, match="recorded in 'driving'"):
        TrainConfig(dataset=str(driving_dataset), worlds=("tabletop",))


def test_train_from_a_dataset_alone_end_to_end(driving_dataset, tmp_path):
    """The CLI, bc only, a tiny model: it learns from the dataset (no demos/ recorded), the
    saved model bins over the dataset's action range, and validation episodes run with it."""
    from embodied_stack.nodes.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), "--dataset", str(driving_dataset), "--stages", "bc",
               "--init-from", "", "--threads", "1", "--pool-size", "2", "--batch-size", "16",
               "--bc-steps", "30", "--warmup-steps", "5", "--lr", "0.003", "--eval-episodes", "1",
               "--eval-submodels", "full", "--checkpoint-every", "0", "--model",
               json.dumps({"hidden_size": 32, "num_heads": 2, "ffn_size": 64, "num_layers": 2,
                           "vision_width": 32, "vision_heads": 2, "depth_encoding": "log",
                           "depth_max_m": 100.0})])
    assert rc == 0
    assert not (out / "demos").exists()  # no live expert demonstrations
    config = json.loads((out / "model/config.json").read_text())
    stats = json.loads((driving_dataset / "meta/stats.json").read_text())["action"]
    assert config["action_range"] == {"vehicle": [stats["min"], stats["max"]]}
    log = torch.load(out / "checkpoint.pt", weights_only=True)["log"]
    entries = json.loads(log)
    assert any("dataset_states_driving" in e for e in entries)
    ce = [e["ce_full"] for e in entries if "ce_full" in e]
    assert ce[-1] < ce[0], ce  # it learns the recorded actions
    assert any("success_full_driving" in e for e in entries)  # validated in the world
    model = ElasticVLA.from_pretrained(out / "model")
    assert model.config.action_range["vehicle"] == [stats["min"], stats["max"]]
