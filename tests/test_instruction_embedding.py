"""ElasticVLAConfig.instruction_embedding: the policy reads the instruction's sentence embedding
(the frozen encoder of instruction_encoder.py), so words outside its vocabulary still reach it.

The encoder here is the real packaged one (USE, NumPy only, no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
from embodied_stack.models.policy.elastic_vla.instruction_encoder import EMBEDDING_DIM
from embodied_stack.models.policy.interface import Observation
from embodied_stack.models.runtime import SENTENCE_DIM, SENTENCE_INPUT, input_names
from embodied_stack.sim.train.config import TrainConfig
from embodied_stack.sim.train.run import build_model, instruction_tokenizer

SMALL = {"hidden_size": 32, "num_heads": 2, "ffn_size": 64, "num_layers": 2, "vision_width": 32,
         "vision_heads": 2, "depth_encoding": "log", "depth_max_m": 100.0, "target_keypoint": True,
         "keypoint_instruction": True, "reference_frame": True}


def _observations(instructions: list[str]) -> list[Observation]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 2.0, (64, 64)).astype(np.float32)
    return [Observation(rgb=rgb, depth=depth, instruction=text, embodiment="arm",
                        proprio=np.linspace(-0.5, 0.5, 8).astype(np.float32)) for text in instructions]


def _trained_like(model: ElasticVLA) -> ElasticVLA:
    """Non-zero sentence projections, as after training (they start at zero)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in (model.sentence_proj.weight, model.keypoint.sentence.weight, model.keypoint_sentence.weight):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.refresh_views()
    return model.eval()


def test_the_runtimes_declare_the_encoders_width_and_the_extra_input():
    assert SENTENCE_DIM == EMBEDDING_DIM
    assert SENTENCE_INPUT not in input_names(ElasticVLAConfig())
    assert input_names(ElasticVLAConfig(instruction_embedding=True))[-1] == SENTENCE_INPUT
    with pytest.raises(ValueError, match="instruction_embedding='yes'"):
        ElasticVLAConfig(instruction_embedding="yes")  # type: ignore[arg-type]


def test_words_outside_the_vocabulary_reach_the_actions_through_the_sentence():
    """Two instructions whose unknown words both become <unk> have the same tokens; only the
    sentence embedding tells them apart (a red thing and a blue thing), and it does."""
    torch.manual_seed(0)
    model = _trained_like(ElasticVLA(ElasticVLAConfig(**SMALL, instruction_embedding=True),
                                     instruction_tokenizer(("tabletop",))))
    texts = ["tap the vermilion doohickey", "tap the cerulean thingamajig"]
    batch = model.obs_to_batch(_observations(texts))
    assert torch.equal(batch["tokens"][0], batch["tokens"][1]), "both should be mostly <unk>"
    emb = batch[SENTENCE_INPUT]
    assert emb.shape == (2, EMBEDDING_DIM) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert float(emb[0] @ emb[1]) < 0.95, "different meanings, different embeddings"
    with torch.no_grad():
        logits = model.batch_logits(batch)
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    # select_action reads the same embedding as the batch path
    action = model.select_action(_observations(texts[:1])[0])
    ids = logits[0].argmax(-1).numpy()
    expected = model.bin_centres.numpy()[ids].reshape(model.config.chunk_length, -1)[:, :action.chunk.shape[1]]
    np.testing.assert_allclose(action.chunk, expected, atol=1e-6)


def test_a_model_that_reads_the_sentence_refuses_a_batch_without_it():
    model = ElasticVLA(ElasticVLAConfig(**SMALL, instruction_embedding=True), instruction_tokenizer(("tabletop",)))
    batch = model.obs_to_batch(_observations(["touch the red cube"]))
    del batch[SENTENCE_INPUT]
    with pytest.raises(ValueError, match="pass instruction_embedding"):
        model.batch_logits(batch)


def test_onnx_runtime_matches_torch_with_the_sentence_input(tmp_path):
    """The exported graph takes the sentence as its fifth input; every submodel matches eager."""
    from embodied_stack.models.runtime.onnx_runtime import OnnxRuntime

    torch.manual_seed(0)
    model = _trained_like(ElasticVLA(ElasticVLAConfig(**SMALL, instruction_embedding=True),
                                     instruction_tokenizer(("tabletop",))))
    runtime = OnnxRuntime(model, cache_dir=tmp_path, submodels=["full", "1/4"], intra_op_threads=1)
    batch = model.obs_to_batch(_observations(["nudge the scarlet cube leftwards", "touch the blue ball"]))
    for sub in ("full", "1/4"):
        model.set_submodel(sub)
        with torch.no_grad():
            eager = model.batch_logits(batch)
        torch.testing.assert_close(runtime.run(batch, sub), eager, atol=1e-4, rtol=1e-4)
    model.set_submodel("full")


def test_warm_start_adds_the_sentence_with_zero_weights_then_bc_trains_it(tmp_path):
    """init_from a model without it, then instruction_embedding on: the old weights carry over
    and the model acts exactly as before (the sentence enters through zero projections); a
    short bc run moves the projections off zero, and the saved model reloads with them."""
    from embodied_stack.sim.train.trainer import train

    torch.manual_seed(0)
    old = ElasticVLA(ElasticVLAConfig(**SMALL), instruction_tokenizer(("tabletop", "driving")))
    with torch.no_grad():
        old.keypoint_proj.weight.normal_(0.0, 0.5)  # as trained: the keypoint reaches the actions
        old.refresh_views()
    old.save_pretrained(tmp_path / "old")
    cfg = TrainConfig(init_from=str(tmp_path / "old"), threads=1, pool_size=2, batch_size=16,
                      stages=("bc",), bc_steps=8, checkpoint_every=4, eval_episodes=0,
                      demo_episodes={"tabletop": 2, "driving": 1}, model={"instruction_embedding": True})
    model = build_model(cfg)
    assert model.config.instruction_embedding and not model.sentence_proj.weight.any()
    batch = model.obs_to_batch(_observations(["touch the red cube", "poke the ruby block"]))
    with torch.no_grad():
        torch.testing.assert_close(model.eval().batch_logits(batch), old.eval().batch_logits(
            {k: v for k, v in batch.items() if k != SENTENCE_INPUT}))
    threads = torch.get_num_threads()
    try:
        train(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    trained = ElasticVLA.from_pretrained(tmp_path / "run" / "model")
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["instruction_embedding"]
    assert trained.sentence_proj.weight.abs().max() > 0
    assert trained.keypoint.sentence.weight.abs().max() > 0
