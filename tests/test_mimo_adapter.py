"""MiMoEmbodiedPolicy on a tiny random Qwen2.5-VL checkpoint built locally (no hub access):
the real loading path, end-to-end generation, canned answers through the real decode and
coordinate mapping, checkpoint validation (missing files, pickle refusal), and the NumPy
processor's patch layout. Random weights produce garbage text: these tests check the pipeline
and the types, never the answers' content."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mimo_fixtures import install_canned_answer, make_tiny_random_checkpoint  # noqa: E402

from embodied_stack.models.policy import mimo_prompts as P  # noqa: E402
from embodied_stack.models.policy.interface import Action, Observation, Policy  # noqa: E402
from embodied_stack.models.policy.mimo_adapter import (  # noqa: E402
    MiMoEmbodiedPolicy,
    MissingCheckpointFile,
    QwenVLNumpyProcessor,
    UnsafeCheckpointError,
    check_checkpoint,
)

CAMERA = (480, 640)  # H, W; the tiny processor (max_pixels 28*28*16) resizes it to 84 x 112


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return make_tiny_random_checkpoint(tmp_path_factory.mktemp("mimo") / "tiny", seed=0)


@pytest.fixture(scope="module")
def policy(ckpt):
    return MiMoEmbodiedPolicy.from_pretrained(ckpt, device="cpu", max_new_tokens=12)


def _image(h=CAMERA[0], w=CAMERA[1], seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


#: The camera's intrinsics and a flat scene 2 m away, for back-projection.
K_CAM = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


def _obs(instruction, embodiment="arm", stamp=12.5, depth_m=2.0):
    depth = None if depth_m is None else np.full(CAMERA, depth_m, np.float32)
    return Observation(rgb=_image(), instruction=instruction, proprio=np.zeros(8, np.float32),
                       embodiment=embodiment, stamp=stamp, depth=depth, camera_K=K_CAM)


@pytest.fixture
def canned(policy, monkeypatch):
    """Replace only model.generate (mimo_fixtures.install_canned_answer): decoding, thinking
    removal, parsing, resize mapping and back-projection are real."""
    monkeypatch.setattr(policy, "max_new_tokens", 200)  # byte-level tokens: room for the answer
    return lambda answer: install_canned_answer(policy, answer, setattr_=monkeypatch.setattr)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_checkpoint_files_and_loading(ckpt, policy):
    names = set(os.listdir(ckpt))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    files = check_checkpoint(ckpt)
    assert files.weights == (ckpt / "model.safetensors",)
    assert isinstance(policy, Policy)
    assert type(policy.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert policy.submodel_names == ["full"] and policy.submodel == "full"
    # The real processor where torchvision exists, the NumPy stand-in where it does not.
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        assert isinstance(policy.processor, QwenVLNumpyProcessor)
    # The loaded weights are the saved ones.
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "model.safetensors"))
    sd = policy.model.state_dict()
    torch.testing.assert_close(sd["lm_head.weight"], saved["lm_head.weight"])


def test_random_weights_point_end_to_end(policy):
    """Garbage text from random weights must still come back as a typed result."""
    g = policy.generate(_image(), P.pointing_prompt("the red cube"), max_new_tokens=5)
    assert isinstance(g.text, str) and 0 <= g.new_tokens <= 5  # the max_new_tokens cap holds
    assert (g.resize.resized_h, g.resize.resized_w) == (84, 112)
    assert (g.resize.resized_h, g.resize.resized_w) == P.smart_resize(*CAMERA, 28, 56 * 56, 28 * 28 * 16)
    a = policy.select_action(_obs("point to the red cube"))
    assert isinstance(a, Action) and a.chunk.shape == (8, 3) and a.chunk.dtype == np.float32
    assert not a.chunk.any() and a.stamp == 12.5 and a.latency_s > 0
    assert a.extras["task"] == "point" and isinstance(a.extras["raw_text"], str)
    assert a.extras["new_tokens"] <= 12
    assert isinstance(a.extras["answer"], (P.PointAnswer, P.NoAnswer))
    assert (a.target_point is None) == (not a.extras["ok"])


# ---------------------------------------------------------------------------------------------
# Canned answers: only generate() is replaced
# ---------------------------------------------------------------------------------------------


def test_canned_point_maps_to_camera_pixels(policy, canned):
    seen = canned('[{"points": [[56, 42], [200, 10]], "label": "red cube"}]')
    a = policy.select_action(_obs("Point to the red cube."))
    assert "/no_think" in seen["prompt"] and "<|image_pad|>" in seen["prompt"]
    assert seen["prompt"].count("<|image_pad|>") == (84 // 28) * (112 // 28)  # 84x112 -> 3x4 merged tokens
    assert seen["max_new_tokens"] == 200  # the cap is passed to generate
    assert a.extras["ok"] and a.extras["task"] == "point" and a.extras["argument"] == "the red cube"
    # (56, 42) in the 112x84 resized image -> (320, 240) in the 640x480 camera image;
    # (200, 10) lies outside the resized image and is dropped. Back-projected at 2 m:
    # x = (320 - 319.5) * 2 / 500, y = (240 - 239.5) * 2 / 500, metres in the optical frame.
    np.testing.assert_allclose(a.extras["target_pixel"], [320.0, 240.0])
    np.testing.assert_allclose(a.target_point, [0.002, 0.002, 2.0], atol=1e-6)
    ans = a.extras["answer"]
    assert ans.frame == "camera" and ans.dropped == 1 and ans.labels == ("red cube",)
    assert not a.chunk.any() and a.plan is None


def test_canned_affordance_with_thinking(policy, canned, monkeypatch):
    monkeypatch.setattr(policy, "thinking", True)
    seen = canned('<think>The drawer handle is at the top.</think>[{"points": [[112, 0]], "label": "handle"}]')
    a = policy.select_action(_obs("open the drawer"))
    assert "/no_think" not in seen["prompt"]
    assert a.extras["task"] == "affordance" and a.extras["thought"] == "The drawer handle is at the top."
    # border point clipped to the last pixel
    np.testing.assert_allclose(a.extras["target_pixel"], [111 * 640 / 112, 0.0], rtol=1e-6)
    np.testing.assert_allclose(a.target_point, [(111 * 640 / 112 - 319.5) * 2 / 500, -239.5 * 2 / 500, 2.0],
                               rtol=1e-5)


def test_canned_point_without_depth_gives_no_target_and_a_reason(policy, canned):
    canned('[{"points": [[56, 42]]}]')
    a = policy.select_action(_obs("point to the cup", depth_m=None))
    assert a.target_point is None and not a.extras["ok"] and "no depth" in a.extras["reason"]
    a = policy.select_action(_obs("point to the cup", depth_m=0.0))  # all "no return"
    assert a.target_point is None and "no valid depth" in a.extras["reason"]
    np.testing.assert_allclose(a.extras["target_pixel"], [320.0, 240.0])


def test_canned_truncated_thinking_gives_no_answer(policy, canned):
    canned("<think>I need to look carefully at the")
    a = policy.select_action(_obs("pick up the cup"))
    assert a.target_point is None and not a.extras["ok"] and "thinking" in a.extras["reason"]
    assert not a.chunk.any()


def test_canned_drive_gives_plan(policy, canned):
    seen = canned('Here is the plan:\n```json\n{"waypoints": [[1.0, 0.0], [2.0, 0.2], [3.0, 0.5]]}\n```')
    a = policy.select_action(_obs("turn left at the junction", embodiment="vehicle"))
    assert '{"waypoints"' in seen["prompt"] and "turn left at the junction" in seen["prompt"]
    assert a.chunk.shape == (8, 2) and not a.chunk.any() and a.target_point is None
    assert a.extras["ok"] and a.extras["waypoint_dt"] == policy.waypoint_dt and policy.outputs_targets
    np.testing.assert_allclose(a.plan, [[1, 0], [2, 0.2], [3, 0.5]], rtol=1e-6)
    assert a.plan.dtype == np.float32


def test_canned_detect_plan_choose(policy, canned):
    canned('[{"bbox_2d": [0, 0, 56, 42], "label": "cup"}]')
    r = policy.detect(_image(), "cup")
    np.testing.assert_allclose(r.boxes, [[0, 0, 320, 240]])
    canned("1. Reach the cup\n2. Grasp it\n3. Lift")
    assert policy.plan_steps(_image(), "lift the cup").steps == ("Reach the cup", "Grasp it", "Lift")
    canned("\\boxed{B}")
    assert policy.choose(_image(), "Which is red?", ["sky", "apple"]).choice == "B"
    canned("no coordinates, sorry")
    a = policy.select_action(_obs("point to the cup"))
    assert a.target_point is None and a.extras["reason"] == "no points in answer"


# ---------------------------------------------------------------------------------------------
# Checkpoint validation: clear errors naming the path and the file; pickle refused
# ---------------------------------------------------------------------------------------------


def _copy(ckpt, tmp_path, name="ck"):
    dst = tmp_path / name
    shutil.copytree(ckpt, dst)
    return dst


@pytest.mark.parametrize("remove, named", [
    ("config.json", "config.json"),
    ("model.safetensors", "model.safetensors"),
    ("tokenizer.json", "tokenizer.json"),
    ("tokenizer_config.json", "tokenizer_config.json"),
    ("preprocessor_config.json", "preprocessor_config.json"),
])
def test_missing_files_named(ckpt, tmp_path, remove, named):
    ck = _copy(ckpt, tmp_path)
    if not (ck / remove).exists():
        pytest.skip(f"{remove} not written by this transformers' processor save")
    (ck / remove).unlink()
    with pytest.raises(MissingCheckpointFile) as err:
        MiMoEmbodiedPolicy.from_pretrained(ck)
    assert str(ck) in str(err.value) and named in str(err.value)


def test_missing_directory_and_shard(ckpt, tmp_path):
    with pytest.raises(MissingCheckpointFile, match="does not exist"):
        MiMoEmbodiedPolicy.from_pretrained(tmp_path / "nowhere")
    ck = _copy(ckpt, tmp_path)
    (ck / "model.safetensors").rename(ck / "model-00001-of-00002.safetensors")
    (ck / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(MissingCheckpointFile, match="model-00002-of-00002.safetensors"):
        check_checkpoint(ck)


def test_pickle_only_checkpoint_refused_without_unpickling(ckpt, tmp_path, monkeypatch):
    import pickle

    def never(*a, **k):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(pickle, "load", never)
    monkeypatch.setattr(pickle, "loads", never)
    ck = _copy(ckpt, tmp_path)
    (ck / "model.safetensors").unlink()
    (ck / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeCheckpointError) as err:
        MiMoEmbodiedPolicy.from_pretrained(ck)
    assert "pytorch_model.bin" in str(err.value) and "safetensors" in str(err.value) and str(ck) in str(err.value)


def test_wrong_architecture_refused(ckpt, tmp_path):
    ck = _copy(ckpt, tmp_path)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "llama", ["LlamaForCausalLM"]
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Qwen2_5_VLForConditionalGeneration"):
        check_checkpoint(ck)


# ---------------------------------------------------------------------------------------------
# The NumPy processor: Qwen's patch layout, placeholder expansion
# ---------------------------------------------------------------------------------------------


def test_numpy_processor_patch_layout_matches_qwen_order(ckpt):
    proc = QwenVLNumpyProcessor.from_pretrained(ckpt)
    h, w = 56, 112  # already a multiple of 28 and inside [min, max] pixels: no resize
    img = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[..., 0], img[..., 1], img[..., 2] = yy, xx, (yy * 7 + xx) % 256
    pv, grid = proc._pixels(img)
    p, m, t = 14, 2, 2
    assert grid == (1, h // p, w // p) and pv.shape == (h // p * w // p, 3 * t * p * p)
    norm = (img.astype(np.float32) / 255 - proc.image_mean) / proc.image_std
    # Qwen's order: merge blocks row-major, then the 2x2 patches inside a block row-major;
    # each row is (channel, temporal copy, y in patch, x in patch).
    row = 0
    for bh in range(h // p // m):
        for bw in range(w // p // m):
            for mh in range(m):
                for mw in range(m):
                    py, px = (bh * m + mh) * p, (bw * m + mw) * p
                    patch = norm[py:py + p, px:px + p].transpose(2, 0, 1)  # C, p, p
                    expect = np.stack([patch] * t, axis=1).reshape(-1)
                    np.testing.assert_allclose(pv[row], expect, rtol=1e-6, atol=1e-6)
                    row += 1
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}])
    assert text.endswith("<|im_start|>assistant\n") and "<|vision_start|><|image_pad|><|vision_end|>hi" in text
    enc = proc(text=[text], images=[img])
    n_img = int((enc["input_ids"] == proc.image_token_id).sum())
    assert n_img == grid[1] * grid[2] // 4 == int(enc["mm_token_type_ids"].sum())
    with pytest.raises(ValueError):
        proc(text=[text], images=[img, img])


def test_numpy_processor_matches_real_processor_when_available(ckpt):
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        pytest.skip("torchvision missing (it cannot be installed beside torch 2.13 CPU): the "
                    "real Qwen2.5-VL processor cannot be built here")
    from transformers import AutoProcessor

    real = AutoProcessor.from_pretrained(str(ckpt), local_files_only=True, trust_remote_code=False)
    mine = QwenVLNumpyProcessor.from_pretrained(ckpt)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "point to the cup"}]}]
    img = _image()
    a = real(text=[real.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)], images=[img],
             return_tensors="pt")
    b = mine(text=[mine.apply_chat_template(msgs)], images=[img])
    assert a["input_ids"].tolist() == b["input_ids"].tolist()
    assert a["image_grid_thw"].tolist() == b["image_grid_thw"].tolist()
    assert a["pixel_values"].shape == b["pixel_values"].shape


# ---------------------------------------------------------------------------------------------
# Elastic submodels through the policy
# ---------------------------------------------------------------------------------------------


def test_policy_elastic_switch(ckpt):
    pol = MiMoEmbodiedPolicy.from_pretrained(ckpt, max_new_tokens=2)
    img = _image(56, 56)
    inputs, _ = pol._inputs(img, "cup?")
    with torch.no_grad():
        before = pol.model(**inputs).logits
    pol.make_elastic(calibration=[inputs])
    assert pol.submodel_names == ["full", "3/4", "1/2", "1/4"]
    with torch.no_grad():  # the permutation keeps the full model's function
        torch.testing.assert_close(pol.model(**inputs).logits, before, rtol=1e-4, atol=1e-4)
    for name in ("1/4", "3/4", "full"):
        pol.set_submodel(name)
        assert pol.submodel == name
        a = pol.select_action(Observation(img, "point to the cup", np.zeros(8, np.float32)))
        assert a.submodel == name and a.extras["new_tokens"] <= 2
    with torch.no_grad():  # back to "full": the parent exactly
        torch.testing.assert_close(pol.model(**inputs).logits, before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="allowed"):
        pol.set_submodel("1/8")
