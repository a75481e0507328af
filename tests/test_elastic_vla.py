"""ElasticVLA modeling: config, tokenizer, action_logits/select_action, the training loss
(forward), the RL interface, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig, InstructionTokenizer
from embodied_stack.models.policy.interface import Action, Observation, Policy

SMALL = dict(hidden_size=64, num_heads=2, ffn_size=128, num_layers=2, vision_width=32, vocab_size=256)


def make_obs(seed=0, embodiment="arm", size=64, depth=True, instruction="Touch the red cube!"):
    rng = np.random.default_rng(seed)
    return Observation(
        rgb=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        depth=rng.random((size, size), dtype=np.float32) * 2 if depth else None,
        instruction=instruction,
        proprio=rng.standard_normal(8).astype(np.float32),
        embodiment=embodiment,
        stamp=12.5 + seed,
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ElasticVLA()


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(1)
    return ElasticVLA(ElasticVLAConfig(**SMALL))


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(image_size=4), "image_size=4 is outside the allowed range [8, 1024]"),
        (dict(image_size=64, patch_size=7), "must be a multiple of patch_size=7"),
        (dict(hidden_size=130, num_heads=4), "hidden_size=130 must be a multiple of num_heads=4"),
        (dict(num_layers=0), "num_layers=0 is outside the allowed range [1, 128]"),
        (dict(depth_max_m=-1.0), "depth_max_m=-1.0 is outside the allowed range (0.0"),
        (dict(action_bins=1), "action_bins=1 is outside the allowed range [2, 65536]"),
        (dict(embodiments={"arm": 4}), "embodiments['arm']=4 is outside the allowed range [1, 3]"),
        (dict(use_depth="yes"), "use_depth='yes' must be True or False"),
        (dict(num_layers=2.5), "num_layers=2.5 is outside"),
        (dict(model_type="other"), "model_type='other'"),
        (dict(vision_stem="resnet"), "vision_stem='resnet' is not one of ('patch', 'conv')"),
        (dict(vision_stem="conv", image_size=60, patch_size=6), "patch_size=6 must be a multiple of 4"),
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(ValueError) as e:
        ElasticVLAConfig(**kwargs)
    assert fragment in str(e.value)


def test_config_json_round_trip(tmp_path):
    cfg = ElasticVLAConfig(**SMALL)
    cfg.save(tmp_path / "c.json")
    assert ElasticVLAConfig.load(tmp_path / "c.json") == cfg
    data = cfg.to_dict() | {"bogus": 1}
    with pytest.raises(ValueError, match="unknown fields \\['bogus'\\]"):
        ElasticVLAConfig.from_dict(data)


def test_default_config_shape():
    c = ElasticVLAConfig()
    assert c.num_image_tokens == 64 and c.head_dim == 32
    assert c.seq_len == 64 + c.max_instruction_tokens + 1 + c.chunk_length * 3


# ------------------------------------------------------------------ tokenizer
def test_tokenizer_split_pad_truncate_and_json(tmp_path):
    tok = InstructionTokenizer.from_words(["touch the red cube", "blue", "!"])
    assert tok.vocab[:2] == ["<pad>", "<unk>"]
    ids = tok.encode("Touch the RED cube, now!", 8)
    assert len(ids) == 8
    assert tok.decode(ids) == "touch the red cube <unk> <unk> !"
    assert ids[-1] == tok.pad_id
    assert tok.encode("touch the red cube", 2) == tok.encode("touch the", 2)
    tok.save(tmp_path / "t.json")
    again = InstructionTokenizer.load(tmp_path / "t.json")
    assert again.vocab == tok.vocab
    (tmp_path / "bad.json").write_text(json.dumps({"type": "bpe", "vocab": []}))
    with pytest.raises(ValueError, match="not a word-level tokenizer"):
        InstructionTokenizer.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="duplicate"):
        InstructionTokenizer(["<pad>", "<unk>", "a", "a"])


def test_tokenizer_larger_than_vocab_refused():
    tok = InstructionTokenizer.from_words([f"w{i}" for i in range(300)])
    with pytest.raises(ValueError, match="vocab_size=256"):
        ElasticVLA(ElasticVLAConfig(**SMALL), tok)


# ------------------------------------------------------------------ forward / select_action
def test_is_policy_and_forward_shape(small):
    assert isinstance(small, Policy) and isinstance(small, torch.nn.Module)
    batch = small.obs_to_batch([make_obs(0), make_obs(1, "vehicle")])
    assert batch["pixels"].shape == (2, 4, 64, 64) and batch["pixels"].dtype == torch.float32
    assert float(batch["pixels"][:, :3].max()) <= 1.0 and float(batch["pixels"][:, 3].min()) >= 0.0
    with torch.no_grad():
        logits = small.batch_logits(batch)
    c = small.config
    assert logits.shape == (2, c.chunk_length * 3, c.action_bins)
    assert batch["action_mask"][0].all() and batch["action_mask"][1].tolist() == [True, True, False] * c.chunk_length


@pytest.mark.parametrize("embodiment, dims", [("arm", 3), ("vehicle", 2)])
def test_select_action(small, embodiment, dims):
    small.set_submodel("1/2")
    try:
        act = small.select_action(make_obs(3, embodiment))
    finally:
        small.set_submodel("full")
    assert isinstance(act, Action)
    assert act.chunk.shape == (small.config.chunk_length, dims) and act.chunk.dtype == np.float32
    assert np.all(np.abs(act.chunk) < 1.0)
    assert act.stamp == 15.5 and act.submodel == "1/2" and act.latency_s > 0


def test_select_action_matches_batched_argmax_and_handles_other_sizes(small):
    obs = make_obs(4, size=96, depth=False)
    act = small.select_action(obs)
    batch = small.obs_to_batch([obs])
    with torch.no_grad():
        ids = small.batch_logits(batch).argmax(-1)
    np.testing.assert_array_equal(act.chunk, small.tokens_to_actions(ids, 3)[0].numpy())
    assert float(batch["pixels"][0, 3].abs().max()) == 0.0  # no depth -> zero channel


def test_depth_nan_and_far_values_are_sanitised(small):
    obs = make_obs(5)
    obs.depth[0, 0], obs.depth[0, 1], obs.depth[0, 2] = np.nan, np.inf, 1e6
    px = small.obs_to_batch([obs])["pixels"][0, 3]
    assert torch.isfinite(px).all() and float(px.max()) <= 1.0
    assert float(px[0, 0]) == 0.0 and float(px[0, 2]) == 1.0


def test_log_depth_encoding_spans_table_and_road():
    model = ElasticVLA(ElasticVLAConfig(**SMALL, depth_encoding="log", depth_min_m=0.2,
                                        depth_max_m=100.0))
    obs = make_obs(6)
    obs.depth[0, :6] = [0.0, np.nan, 0.2, 1.0, 30.0, np.inf]
    px = model.obs_to_batch([obs])["pixels"][0, 3, 0, :6].numpy()
    span = np.log(100.0 / 0.2)
    # no return -> 0; log(d / 0.2) / log(500) otherwise; +inf is beyond range -> 1
    np.testing.assert_allclose(px, [0.0, 0.0, 0.0, np.log(5.0) / span, np.log(150.0) / span,
                                    1.0], atol=1e-6)
    # a 30 m barrier and the 50 m road behind it stay apart (the linear 10 m encoding saturates)
    assert np.log(250.0) / span - px[4] > 0.05
    with pytest.raises(ValueError, match="depth_encoding"):
        ElasticVLAConfig(depth_encoding="inverse")


def test_image_normalisation_sees_through_a_dimmer_tinted_room():
    """rgb_normalization="image": each channel over its own image, so a room at half the
    light with a warm tint (a scale per channel) gives nearly the same input; "unit" does not."""
    obs = make_obs(9)
    dim = make_obs(9)
    dim.rgb = np.clip(obs.rgb.astype(np.float64) * [0.55, 0.5, 0.45], 0, 255).astype(np.uint8)
    for norm, close in (("image", True), ("unit", False)):
        model = ElasticVLA(ElasticVLAConfig(**SMALL, rgb_normalization=norm))
        a, b = (model.obs_to_batch([o])["pixels"][0, :3] for o in (obs, dim))
        assert (float((a - b).abs().mean()) < 0.03) == close
    px = ElasticVLA(ElasticVLAConfig(**SMALL, rgb_normalization="image")).obs_to_batch([obs])["pixels"][0, :3]
    np.testing.assert_allclose(px.mean(dim=(1, 2)).numpy(), 0.5, atol=1e-4)
    with pytest.raises(ValueError, match="rgb_normalization='auto'"):
        ElasticVLAConfig(rgb_normalization="auto")


def test_proprio_inputs_zero_what_the_model_must_not_read():
    model = ElasticVLA(ElasticVLAConfig(**SMALL, proprio_inputs={"arm": [0, 1, 2, 6]}))
    arm = make_obs(7)
    arm.proprio[:] = np.arange(1, 9)
    car = make_obs(8, embodiment="vehicle")
    car.proprio[:] = np.arange(1, 9)
    p = model.obs_to_batch([arm, car])["proprio"].numpy()
    np.testing.assert_array_equal(p[0], [1, 2, 3, 0, 0, 0, 7, 0])  # no velocities
    np.testing.assert_array_equal(p[1], np.arange(1, 9))  # not listed: everything
    with pytest.raises(ValueError, match="proprio_inputs"):
        ElasticVLAConfig(proprio_inputs={"arm": [8]})
    with pytest.raises(ValueError, match="robot"):
        ElasticVLAConfig(proprio_inputs={"robot": [0]})


def test_action_token_round_trip(small):
    c = small.config
    chunk = torch.rand(2, c.chunk_length, 2) * 2 - 1
    ids = small.actions_to_tokens(chunk)
    assert ids.shape == (2, c.chunk_length * 3)
    back = small.tokens_to_actions(ids, 2)
    assert float((back - chunk).abs().max()) <= 1.0 / c.action_bins + 1e-6


# ------------------------------------------------------------------ training: forward(batch) -> (loss, logs)
def _labelled(model, batch, **targets):
    """A batch with action tokens to learn (all bin 0) and any of forward's other targets."""
    tokens = torch.zeros(len(batch["tokens"]), model.config.num_action_tokens, dtype=torch.long)
    return {**batch, "action_tokens": tokens, **targets}


def test_forward_is_the_masked_smoothed_action_cross_entropy(small):
    """Without targets for the training-only heads, the loss is the action cross-entropy over the
    tokens the embodiment uses (a vehicle's 3rd dim never counts), with the label smoothing asked
    for; loss_mask narrows it; the logged action logits are action_logits'."""
    c = small.config
    batch = small.obs_to_batch([make_obs(0, "arm"), make_obs(1, "vehicle")])
    tokens = torch.randint(0, c.action_bins, (2, c.num_action_tokens), generator=torch.Generator().manual_seed(0))
    used = batch["action_mask"]
    with torch.no_grad():
        logits = small.batch_logits(batch)
        loss, logs = small({**batch, "action_tokens": tokens})
        torch.testing.assert_close(loss, F.cross_entropy(logits[used], tokens[used]))
        assert logs["ce"] == pytest.approx(float(loss))
        torch.testing.assert_close(logs["action_logits"], logits)
        third = torch.arange(c.num_action_tokens) % 3 == 2
        other = tokens.clone()
        other[1, third] = (other[1, third] + 1) % c.action_bins
        torch.testing.assert_close(small({**batch, "action_tokens": other})[0], loss)
        smoothed = small({**batch, "action_tokens": tokens}, label_smoothing=0.1)[0]
        torch.testing.assert_close(smoothed, F.cross_entropy(logits[used], tokens[used], label_smoothing=0.1))
        first_step = used & (torch.arange(c.num_action_tokens) < c.max_action_dim)
        torch.testing.assert_close(small({**batch, "action_tokens": tokens, "loss_mask": first_step})[0],
                                   F.cross_entropy(logits[first_step], tokens[first_step]))


def test_forward_adds_the_privileged_heads_losses_where_there_are_targets():
    """With aux_dim and target_keypoint the loss adds the auxiliary head's, the keypoint's own and
    the keypoint MLP's losses where the batch has targets (NaN: none), scaled by their weights
    (0: off); teacher-forced rows leave out the soft-argmax error; the action loss's gradient
    never reaches the keypoint path."""
    torch.manual_seed(5)
    m = ElasticVLA(ElasticVLAConfig(**SMALL, aux_dim=6, target_keypoint=True))
    batch = m.obs_to_batch([make_obs(0, "arm"), make_obs(1, "arm"), make_obs(2, "vehicle")])
    features = torch.randn(3, 6)
    features[2] = float("nan")
    uv = torch.tensor([[0.3, 0.6], [0.7, 0.2], [float("nan")] * 2])
    labelled = _labelled(m, batch, aux_targets=features, keypoint_uv=uv)
    with torch.no_grad():
        loss, logs = m(labelled)
        assert {"ce", "aux", "keypoint", "keypoint_acc", "keypoint_err_px", "keypoint_aux"} <= set(logs)
        assert float(loss) == pytest.approx(logs["ce"] + logs["aux"] + logs["keypoint"] + logs["keypoint_aux"],
                                            rel=1e-5)
        weighted = m(labelled, aux_weight=0.5, keypoint_weight=2.0)[0]
        assert float(weighted) == pytest.approx(
            logs["ce"] + 0.5 * (logs["aux"] + logs["keypoint_aux"]) + 2.0 * logs["keypoint"], rel=1e-5)
        plain, plain_logs = m(labelled, aux_weight=0.0, keypoint_weight=0.0)
        assert set(plain_logs) == {"ce", "action_logits"} and float(plain) == pytest.approx(logs["ce"])
        assert "keypoint_err_px" not in m({**labelled, "keypoint_forced": uv})[1]
    m.train()
    try:
        m(labelled, aux_weight=0.0, keypoint_weight=0.0)[0].backward()
        for part in (m.keypoint, m.keypoint_in):
            assert all(p.grad is None or not p.grad.any() for p in part.parameters())
        assert m.keypoint_proj.weight.grad is not None
    finally:
        m.zero_grad(set_to_none=True)
        m.eval()


# ------------------------------------------------------------------ RL interface
def test_log_probs_entropy_and_masking(small):
    c = small.config
    batch = small.obs_to_batch([make_obs(0, "arm"), make_obs(1, "vehicle")])
    tokens = small.actions_to_tokens(torch.zeros(2, c.chunk_length, 3))
    small.train()
    try:
        lp = small.log_probs(batch, tokens)
        ent = small.entropy(batch)
        assert lp.shape == ent.shape == (2, c.chunk_length * 3)
        assert (lp <= 0).all() and (ent >= 0).all()
        third = torch.arange(c.chunk_length * 3) % 3 == 2
        assert (lp[1, third] == 0).all() and (ent[1, third] == 0).all()  # vehicle: 3rd dim masked
        assert (lp[0, third] < 0).all() and (ent[0, third] > 0).all()
        assert float(ent.detach().max()) <= np.log(c.action_bins) + 1e-4
        # the chunk log-prob is the sum over its tokens; gradients reach the weights
        lp.sum(-1).mean().backward()
        assert small.action_head.weight.grad is not None
        assert small.layers[0].q_proj.weight.grad.abs().sum() > 0
    finally:
        small.zero_grad(set_to_none=True)
        small.eval()
    # without action_mask in the batch the embodiment decides
    no_mask = {k: v for k, v in batch.items() if k != "action_mask"}
    with torch.no_grad():
        assert torch.equal(small.log_probs(no_mask, tokens), small.log_probs(batch, tokens))


# ------------------------------------------------------------------ files
def _saved(model, tmp_path):
    d = tmp_path / "m"
    model.save_pretrained(d)
    return d


def test_round_trip_bit_identical(model, tmp_path):
    d = _saved(model, tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = ElasticVLA.from_pretrained(d)
    batch = model.obs_to_batch([make_obs(i, "arm" if i % 2 else "vehicle") for i in range(3)])
    with torch.no_grad():
        for name in ("full", "1/4"):
            model.set_submodel(name)
            loaded.set_submodel(name)
            assert torch.equal(model.batch_logits(batch), loaded.batch_logits(batch))
    model.set_submodel("full")
    loaded.set_submodel("full")
    obs = make_obs(9)
    np.testing.assert_array_equal(model.select_action(obs).chunk, loaded.select_action(obs).chunk)


def test_conv_stem_keeps_the_token_grid_and_round_trips(tmp_path):
    torch.manual_seed(2)
    conv = ElasticVLA(ElasticVLAConfig(**{**SMALL, "vision_stem": "conv"}))
    batch = conv.obs_to_batch([make_obs(i, "arm") for i in range(2)])
    x = conv.patch_embed(batch["pixels"])
    assert x.shape[-2:] == (conv.config.image_size // conv.config.patch_size,) * 2
    loaded = ElasticVLA.from_pretrained(_saved(conv, tmp_path))
    assert loaded.config.vision_stem == "conv"
    with torch.no_grad():
        assert torch.equal(conv.batch_logits(batch), loaded.batch_logits(batch))


def _every_submodel_runs_and_it_round_trips(model, batch, tmp_path):
    with torch.no_grad():
        for name in ("full", "3/4", "1/2", "1/4"):
            model.set_submodel(name)
            assert torch.isfinite(model.batch_logits(batch)).all()
        model.set_submodel("full")
    loaded = ElasticVLA.from_pretrained(_saved(model, tmp_path))
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded.batch_logits(batch), model.batch_logits(batch))


def test_target_keypoint_finds_one_of_two_peaks_and_feeds_the_state_token(tmp_path):
    """target_keypoint: the windowed soft-argmax lands on the best cell even when a second,
    nearly as good one is far away (a global soft-argmax would land between them); a forced
    (u, v) is passed through where finite; the zero-initialised projection starts as a no-op
    and, once trained, the keypoint changes the actions; every submodel runs; it round-trips."""
    from embodied_stack.models.policy.elastic_vla.target_keypoint import TargetKeypoint

    kp = TargetKeypoint(4, 64, 16, pad_id=0, use_depth=True)
    g = kp.grid
    logits = torch.full((1, g * g), -10.0)
    logits[0, 5 * g + 4] = 5.0  # best: cell (row 5, col 4)
    logits[0, 25 * g + 28] = 4.9  # a second object far away
    uv = kp.window_weights(logits, kp.cell_uv[logits.argmax(-1)]) @ kp.cell_uv
    torch.testing.assert_close(uv, torch.tensor([[4.5 / g, 5.5 / g]]), atol=1e-3, rtol=0)
    assert kp.target_cells(torch.tensor([[4.5 / g, 5.5 / g], [0.9999, 0.0]])).tolist() == [5 * g + 4, g - 1]
    pixels, tokens = torch.rand(2, 4, 64, 64), torch.tensor([[3, 4, 0, 0], [5, 0, 0, 0]])
    forced = torch.tensor([[0.25, 0.75], [float("nan"), float("nan")]])
    own_logits, own, no_effector = kp(pixels, tokens)
    assert no_effector is None
    f_logits, f, _ = kp(pixels, tokens, forced)
    torch.testing.assert_close(f_logits, own_logits)
    torch.testing.assert_close(f[0, :2], forced[0])
    torch.testing.assert_close(f[1], own[1])

    torch.manual_seed(7)
    with_kp = ElasticVLA(ElasticVLAConfig(**SMALL, target_keypoint=True))
    plain = ElasticVLA(ElasticVLAConfig(**SMALL))
    plain.load_state_dict({k: v for k, v in with_kp.state_dict().items() if not k.startswith("keypoint")})
    batch = with_kp.obs_to_batch([make_obs(i, "arm") for i in range(3)])
    with torch.no_grad():
        torch.testing.assert_close(with_kp.batch_logits(batch), plain.batch_logits(batch))
        with_kp.keypoint_proj.weight.normal_(0.0, 1.0)
        with_kp.refresh_views()
        kp_logits, kp, _ = with_kp.keypoint(batch["pixels"], batch["tokens"])
        assert kp_logits.shape == (3, 32 * 32) and kp.shape == (3, 6 + 32)
        a = with_kp(_labelled(with_kp, batch, keypoint_forced=torch.tensor([[0.1, 0.1]] * 3)))[1]
        b = with_kp(_labelled(with_kp, batch, keypoint_forced=torch.tensor([[0.9, 0.9]] * 3)))[1]
        assert not torch.allclose(a["action_logits"], b["action_logits"])  # the keypoint reaches the actions
        cars = with_kp.obs_to_batch([make_obs(i, "vehicle") for i in range(2)])
        torch.testing.assert_close(with_kp.batch_logits(cars), plain.batch_logits(cars))  # arms only
    _every_submodel_runs_and_it_round_trips(with_kp, batch, tmp_path)
    with pytest.raises(ValueError, match="target_keypoint='yes' must be True or False"):
        ElasticVLAConfig(**SMALL, target_keypoint="yes")
    with pytest.raises(ValueError, match=r"keypoint_embodiments=\['boat'\] must be a list of embodiment names"):
        ElasticVLAConfig(**SMALL, target_keypoint=True, keypoint_embodiments=["boat"])


def test_keypoint_instruction_lets_the_direction_word_reach_the_keypoint_mlp(tmp_path):
    """keypoint_instruction: the keypoint MLP reads the instruction's words too, so two
    instructions naming the same object but different push directions give different
    target-minus-robot readings (without it they cannot: the same keypoint aux loss); it
    round-trips; it needs target_keypoint."""
    torch.manual_seed(3)
    left, right = make_obs(0, "arm", instruction="push the red cube to the left"), \
        make_obs(0, "arm", instruction="push the red cube to the right")
    for with_words in (False, True):
        m = ElasticVLA(ElasticVLAConfig(**SMALL, target_keypoint=True, aux_dim=6,
                                        keypoint_instruction=with_words))
        assert (m.keypoint_words is not None) == with_words
        batch = m.obs_to_batch([left, right])
        readings = []
        for row in (0, 1):  # the same keypoint, target and features for both
            one = _labelled(m, {k: v[row:row + 1] for k, v in batch.items()},
                            keypoint_uv=torch.tensor([[0.4, 0.6]]), keypoint_forced=torch.tensor([[0.4, 0.6]]),
                            aux_targets=torch.ones(1, 6))
            with torch.no_grad():
                readings.append(m(one)[1]["keypoint_aux"])
        assert (readings[0] == readings[1]) != with_words
    with torch.no_grad():
        m.keypoint_proj.weight.normal_(0.0, 1.0)
        m.refresh_views()
    _every_submodel_runs_and_it_round_trips(m, batch, tmp_path)
    with pytest.raises(ValueError, match="keypoint_instruction=True needs target_keypoint=True"):
        ElasticVLAConfig(**SMALL, keypoint_instruction=True)


def test_effector_keypoint_hands_on_target_minus_effector_and_learns_where_the_effector_is(tmp_path):
    """effector_keypoint: a second head finds the end effector; the keypoint MLP gets its
    point and target minus effector in the camera frame (the same when both points move
    alike, as under a camera shift); its loss trains that head only where the effector's
    image position is known; every submodel runs and it round-trips; it needs
    target_keypoint."""
    torch.manual_seed(5)
    m = ElasticVLA(ElasticVLAConfig(**SMALL, target_keypoint=True, aux_dim=6, effector_keypoint=True))
    obs = make_obs(0, "arm")
    obs.depth[:] = 0.7
    batch = m.obs_to_batch([obs, make_obs(1, "arm")])
    with torch.no_grad():
        logits, kp, e_logits = m.keypoint(batch["pixels"], batch["tokens"])
    assert e_logits is not None and e_logits.shape == logits.shape
    assert kp.shape == (2, 6 + 32 + 6 + 3)
    target_xyz, effector_xyz, difference = kp[:, 3:6], kp[:, 38 + 3:38 + 6], kp[:, 38 + 6:]
    torch.testing.assert_close(difference, target_xyz - effector_xyz)
    assert effector_xyz[0, 2].item() == pytest.approx(0.7, rel=1e-4)  # depth under the effector
    # its loss: only rows where the effector is seen, logged apart from the target's
    labelled = _labelled(m, batch, keypoint_uv=torch.tensor([[0.4, 0.6]] * 2),
                         effector_uv=torch.tensor([[0.2, 0.3], [float("nan"), float("nan")]]))
    loss, logs = m(labelled)
    assert {"effector", "effector_acc", "effector_err_px", "keypoint"} <= set(logs)
    loss.backward()
    assert m.keypoint.effector_score[-1].weight.grad.abs().sum() > 0
    without = _labelled(m, batch, keypoint_uv=torch.tensor([[0.4, 0.6]] * 2),
                        effector_uv=torch.full((2, 2), float("nan")))
    assert "effector" not in m(without)[1]
    with torch.no_grad():
        m.keypoint_proj.weight.normal_(0.0, 1.0)
        m.refresh_views()
    _every_submodel_runs_and_it_round_trips(m, batch, tmp_path)
    with pytest.raises(ValueError, match="effector_keypoint=True needs target_keypoint=True"):
        ElasticVLAConfig(**SMALL, effector_keypoint=True)


@pytest.mark.parametrize("encoding", ["log", "linear"])
def test_target_keypoint_back_projects_in_metres(encoding):
    """The keypoint's depth is decoded back to metres whatever the encoding, and the point is
    back-projected as ((u - 0.5) z, (v - 0.5) z, z): linear in the target's camera-frame
    position, so the robot-frame offset is one linear map away for a fixed camera."""
    cfg = ElasticVLAConfig(**SMALL, target_keypoint=True, depth_encoding=encoding, depth_max_m=20.0)
    m = ElasticVLA(cfg)
    obs = make_obs(0, "arm")
    obs.depth[:] = 0.7
    batch = m.obs_to_batch([obs])
    with torch.no_grad():
        _, kp, _ = m.keypoint(batch["pixels"], batch["tokens"], torch.tensor([[0.25, 0.75]]))
    u, v, _, x, y, z = kp[0, :6].tolist()
    assert (u, v) == (0.25, 0.75)
    assert z == pytest.approx(0.7, rel=1e-4)
    assert (x, y) == (pytest.approx(-0.25 * z), pytest.approx(0.25 * z))


def _rewrite(d, fn):
    path = d / "model.safetensors"
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path))


def test_refuses_corrupt_file(small, tmp_path):
    d = _saved(small, tmp_path)
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(b"\x00\x01garbage" + raw[40:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ElasticVLA.from_pretrained(d)


def test_refuses_truncated_file(small, tmp_path):
    d = _saved(small, tmp_path)
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="safetensors"):
        ElasticVLA.from_pretrained(d)


def test_refuses_wrong_shape(small, tmp_path):
    d = _saved(small, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["ffn_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        ElasticVLA.from_pretrained(d)
    assert "layers.0.gate_proj.weight: shape (128, 64) but config needs (96, 64)" in str(e.value)


def test_refuses_wrong_dtype(small, tmp_path):
    d = _saved(small, tmp_path)
    _rewrite(d, lambda t: t.__setitem__("final_norm.weight", t["final_norm.weight"].half()))
    with pytest.raises(ValueError, match="final_norm.weight: dtype F16 but model needs F32"):
        ElasticVLA.from_pretrained(d)


def test_refuses_missing_and_extra_keys(small, tmp_path):
    d = _saved(small, tmp_path)
    _rewrite(d, lambda t: t.pop("action_head.bias"))
    with pytest.raises(ValueError, match=r"missing keys \['action_head.bias'\]"):
        ElasticVLA.from_pretrained(d)
    d2 = tmp_path / "extra"
    small.save_pretrained(d2)
    _rewrite(d2, lambda t: t.__setitem__("sneaky.weight", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"unexpected keys \['sneaky.weight'\]"):
        ElasticVLA.from_pretrained(d2)


def test_older_configs_load_with_the_removed_pointing_head_off_only(small, tmp_path):
    """Models saved before the pointing head was removed hold point_head/point_readout: they load
    when both are off (every shipped model); switched on, the file is refused with the commit
    whose code still runs it."""
    d = _saved(small, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "point_head": False, "point_readout": False}))
    assert ElasticVLA.from_pretrained(d).config == small.config
    (d / "config.json").write_text(json.dumps({**cfg, "point_head": True, "point_readout": False}))
    with pytest.raises(ValueError, match="point_head switched on: that field was removed.*commit 4bed112"):
        ElasticVLA.from_pretrained(d)


def test_refuses_non_finite_and_missing_files(small, tmp_path):
    d = _saved(small, tmp_path)
    _rewrite(d, lambda t: t["tok_embed"].__setitem__((0, 0), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        ElasticVLA.from_pretrained(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing tokenizer.json"):
        ElasticVLA.from_pretrained(d)


def test_reference_frame_is_stacked_after_the_frame_and_defaults_to_it():
    """reference_frame: pixels hold the frame, then the reference frame (encoded the same
    way); no reference given means the frame is its own (the task's first frame)."""
    import dataclasses

    m = ElasticVLA(ElasticVLAConfig(hidden_size=32, num_heads=2, ffn_size=64, num_layers=2,
                                    vision_width=32, reference_frame=True))
    n = m.config.frame_channels
    rng = np.random.default_rng(0)
    a = Observation(rgb=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), instruction="stop",
                    proprio=np.zeros(8, np.float32), embodiment="vehicle",
                    depth=rng.random((64, 64), dtype=np.float32) * 50)
    b = dataclasses.replace(a, rgb=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                            depth=rng.random((64, 64), dtype=np.float32) * 50)
    alone = m.obs_to_batch([a])["pixels"][0]
    assert alone.shape[0] == 2 * n
    torch.testing.assert_close(alone[n:], alone[:n])
    with_ref = m.obs_to_batch([dataclasses.replace(b, reference_rgb=a.rgb, reference_depth=a.depth)])
    torch.testing.assert_close(with_ref["pixels"][0, n:], alone[:n])
    torch.testing.assert_close(with_ref["pixels"][0, :n], m.obs_to_batch([b])["pixels"][0, :n])
    with pytest.raises(ValueError, match="reference_frame"):
        ElasticVLAConfig(reference_frame=1)
    with pytest.raises(ValueError, match="reference_rgb"):
        dataclasses.replace(a, reference_rgb=np.zeros((64, 64), np.uint8))
