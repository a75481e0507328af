"""Elastic slicing of Hugging Face Qwen2 / Qwen2.5-VL decoders (models/elastic/qwen.py) on tiny
random models: the permutation keeps the full model's function, every named submodel runs,
parameters shrink, submodels are views of the parent (no copies, no extra memory), the full
model comes back exactly, and the KL report. Random weights: the KL values are a smoke signal."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mimo_fixtures import make_tiny_random_model, tiny_image_processor_config  # noqa: E402

from embodied_stack.models.elastic.qwen import (  # noqa: E402
    ElasticQwen,
    collect_importance,
    find_parts,
    head_order,
    permute_by_importance,
    submodel_kl,
)
from embodied_stack.models.elastic.submodels import NAMED_SUBMODELS, is_view_of, resident_weight_bytes  # noqa: E402
from embodied_stack.models.policy.mimo_adapter import (  # noqa: E402
    QWEN2_VL_CHAT_TEMPLATE,
    QwenVLNumpyProcessor,
)


def _logits(model, batches):
    with torch.no_grad():
        return [model(**b, use_cache=False).logits for b in batches]


def _storages(model) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}


def _text_batches(seed=0, n=2, vocab=256):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, vocab, (2, 16), generator=g)
        mask = torch.ones_like(ids)
        mask[1, :5] = 0  # left padding in the second row
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


@pytest.fixture(scope="module")
def vl():
    """A tiny Qwen2.5-VL (8 query heads on 4 KV heads) and batches with and without an image."""
    model, tok = make_tiny_random_model(seed=0)
    proc = QwenVLNumpyProcessor(tok, tiny_image_processor_config(), QWEN2_VL_CHAT_TEMPLATE)
    rng = np.random.default_rng(0)
    image_batches = []
    for text in ("cup?", "door"):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        image_batches.append(proc(text=[proc.apply_chat_template(msgs)],
                                  images=[rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)]))
    return model, tok, image_batches + _text_batches(0, 2)


def _qwen2_text(tied: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied)
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
    return model


def test_head_order_keeps_gqa_groups():
    scores = torch.tensor([1.0, 9.0, 5.0, 5.0, 0.0, 0.5, 8.0, 0.1])  # 4 KV groups of 2 query heads
    kv, q = head_order(scores, 4)
    assert kv.tolist() == [0, 1, 3, 2]  # group sums 10, 10, 0.5, 8.1 (stable for ties)
    assert q.tolist() == [1, 0, 2, 3, 6, 7, 5, 4]
    # query head q[i] must belong to KV group kv[i // G]
    assert all(int(q[i]) // 2 == int(kv[i // 2]) for i in range(8))


@pytest.mark.parametrize("tied", [True, False])
def test_permutation_preserves_outputs_qwen2(tied):
    model, batches = _qwen2_text(tied), _text_batches(3, 2)
    before = _logits(model, batches)
    imp = collect_importance(model, batches)
    parts = find_parts(model)
    assert imp.channel.shape == (parts.hidden_size,) and len(imp.heads) == len(imp.ffn) == len(parts.layers)
    assert imp.layers.shape == (len(parts.layers),) and (imp.layers > 0).all()
    orders = permute_by_importance(model, imp)
    assert not torch.equal(orders["channel"], torch.arange(orders["channel"].numel()))  # really permuted
    for a, b in zip(before, _logits(model, batches)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    imp2 = collect_importance(model, batches)  # after permutation the scores come out sorted
    assert torch.all(imp2.channel[:-1] >= imp2.channel[1:] - 1e-3 * imp2.channel.max())
    assert torch.all(imp2.ffn[0][:-1] >= imp2.ffn[0][1:] - 1e-3 * imp2.ffn[0].max())
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight


#: the vl batches used for calibration; the others are held out
CALIBRATION = (0, 2)


@pytest.fixture(scope="module")
def elastic(vl):
    """The tiny Qwen2.5-VL, calibrated on two of its four batches (one with an image)."""
    model, _, batches = vl
    model = type(model)(model.config).eval()
    model.load_state_dict(vl[0].state_dict())
    before = _logits(model, batches)
    el = ElasticQwen.calibrate(model, [batches[i] for i in CALIBRATION])
    return el, batches, before


def test_permutation_preserves_vl_outputs(elastic):
    el, batches, before = elastic
    assert el.active == "full"
    for a, b in zip(before, _logits(el.model, batches)):  # with and without an image
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert el.importance is not None and (el.importance.layers > 0).all()


def test_every_named_submodel_runs_and_shrinks(elastic):
    el, batches, _ = elastic
    assert el.submodel_names == list(NAMED_SUBMODELS)
    counts = []
    for name in el.submodel_names:
        d = el.apply(name)
        assert el.active == name
        assert d.q_heads == d.kv_heads * 2  # whole GQA groups
        assert 0 in d.layers
        for b, out in zip(batches, _logits(el.model, batches)):
            assert out.shape[:2] == b["input_ids"].shape and torch.isfinite(out).all()
        counts.append(el.param_count())
    el.apply("full")
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
    assert len(set(counts)) == len(counts)  # each named submodel strictly smaller on this model
    dims = {n: el.dims(n) for n in el.submodel_names}
    assert dims["full"].hidden == 64 and dims["full"].layers == (0, 1, 2, 3)
    # The tiny model: hidden 64, 8 query heads in 4 KV groups, FFN 128, 4 layers.
    spec = NAMED_SUBMODELS["1/4"]
    assert dims["1/4"].hidden == round(64 * spec.hidden_frac / 16) * 16  # whole head dims
    assert dims["1/4"].q_heads == round(8 * spec.heads_frac)
    assert dims["1/4"].ffn == round(128 * spec.ffn_frac)
    assert len(dims["1/4"].layers) == max(1, round(4 * spec.depth_frac))


def test_submodels_are_views_of_the_parent(elastic):
    el, batches, _ = elastic
    full_params = {(id(m), a): p for (_, a), (m, _, p) in el._parent.items()}
    bytes_before = resident_weight_bytes(el.model)
    storages_before = _storages(el.model)
    for name in ("3/4", "1/2", "1/4"):
        el.apply(name)
        n_views = 0
        for (mid, attr), parent in full_params.items():
            mod = el._parent[(mid, attr)][0]
            t = getattr(mod, attr)
            assert is_view_of(t, parent), (name, type(mod).__name__, attr)
            n_views += t is not parent
        assert n_views > 0
        # zero extra weight memory: every storage the model reaches already existed
        assert _storages(el.model) <= storages_before
        assert resident_weight_bytes(el.model) <= bytes_before
        ranges = el.parent_storages()
        assert all(any(lo <= t.data_ptr() < hi for lo, hi in ranges) for t in el.active_tensors().values())
    el.apply("full")
    for (mid, attr), parent in full_params.items():  # the very same Parameter objects are back
        assert getattr(el._parent[(mid, attr)][0], attr) is parent
    assert resident_weight_bytes(el.model) == bytes_before


def test_full_restores_exact_outputs(elastic):
    el, batches, before = elastic
    el.apply("1/4")
    el.apply("full")
    for a, b in zip(before, _logits(el.model, batches)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_kl_report(elastic, capsys):
    el, batches, _ = elastic
    kl = submodel_kl(el, batches)
    assert list(kl) == list(NAMED_SUBMODELS)
    assert kl["full"] == 0.0
    values = [kl[n] for n in NAMED_SUBMODELS]
    assert all(v >= 0 for v in values)
    assert values == sorted(values), kl  # grows as the submodel shrinks (tiny random model)
    assert el.active == "full"
    with capsys.disabled():
        print("\nKL(full || submodel) on the tiny random Qwen2.5-VL (smoke signal only):",
              {k: round(v, 4) for k, v in kl.items()})


def test_ranking_beats_identity_order_on_held_out_prompts(vl, elastic):
    """Smoke signal, not evidence: on this seeded random model, slicing after the importance
    permutation loses less (KL on the batches not used for calibration) than slicing the
    unpermuted model in its original order."""
    el, batches, _ = elastic
    held = [b for i, b in enumerate(batches) if i not in CALIBRATION]
    model = type(vl[0])(vl[0].config).eval()
    model.load_state_dict(vl[0].state_dict())
    unranked = submodel_kl(ElasticQwen(model), held)
    ranked = submodel_kl(el, held)
    assert sum(ranked.values()) < sum(unranked.values()), (ranked, unranked)


def test_generate_with_skipped_layers(elastic):
    el, batches, _ = elastic
    el.apply("1/4")
    try:
        assert len(el.dims("1/4").layers) < 4
        b = batches[0]
        out = el.model.generate(**b, max_new_tokens=3, do_sample=False)
        assert out.shape[1] == b["input_ids"].shape[1] + 3
    finally:
        el.apply("full")


def test_qwen2_text_tied_submodels(capsys):
    model = _qwen2_text(tied=True)
    batches = _text_batches(5, 2)
    el = ElasticQwen.calibrate(model, batches)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    kl = submodel_kl(el, batches)
    assert kl["full"] == 0.0 and all(v >= 0 for v in kl.values())
    for name in el.submodel_names:
        el.apply(name)
        assert el.model.lm_head.weight.data_ptr() == el.model.model.embed_tokens.weight.data_ptr()
        _logits(el.model, batches)
    el.apply("full")
    with pytest.raises(ValueError, match="allowed"):
        el.apply("1/8")
