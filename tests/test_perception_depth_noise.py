"""The worlds' optional depth-sensor noise model (sim/worlds/depth_noise.py)."""

import numpy as np
import pytest

from embodied_stack.sim.worlds.depth_noise import DepthNoise
from embodied_stack.sim.worlds.driving import DrivingEnv
from embodied_stack.sim.worlds.tabletop import TabletopEnv


@pytest.mark.parametrize("world", [TabletopEnv, DrivingEnv])
def test_noise_off_is_the_exact_render(world):
    plain, off = world(width=48, height=32), world(width=48, height=32, depth_noise=False)
    for seed in (0, 1):
        a, _ = plain.reset(seed=seed)
        b, _ = off.reset(seed=seed)
        raw = (plain.renderer if world is TabletopEnv else plain._renderer).render(plain.data)[1]
        assert np.array_equal(a["depth"], raw) and np.array_equal(a["depth"], b["depth"])
        assert np.array_equal(a["rgb"], b["rgb"])
        act = np.zeros(plain.action_space.shape, np.float32)
        assert np.array_equal(plain.step(act)[0]["depth"], off.step(act)[0]["depth"])


def test_noise_on_same_scene_noisy_depth():
    clean, noisy = TabletopEnv(width=160, height=120), TabletopEnv(width=160, height=120,
                                                                   depth_noise=True)
    near_std, far_std = [], []
    for seed in range(3):
        c, ci = clean.reset(seed=seed)
        n, ni = noisy.reset(seed=seed)
        assert np.array_equal(c["rgb"], n["rgb"])  # the same scene
        assert [o["position"].tolist() for o in ci["objects"]] == \
            [o["position"].tolist() for o in ni["objects"]]
        dc, dn = c["depth"], n["depth"]
        both = (dc > 0) & (dn > 0)
        dropped = np.mean((dc > 0) & (dn == 0))
        assert 0.001 < dropped < 0.2
        err = (dn - dc)[both]
        # Away from edges the error is the axial noise; it grows with range (z^2 model).
        z = dc[both]
        small = np.abs(err) < 0.05
        near_std.append(np.std(err[small & (z < np.percentile(z, 30))]))
        far_std.append(np.std(err[small & (z > np.percentile(z, 70))]))
    assert np.mean(far_std) > 1.2 * np.mean(near_std)
    assert 0.0005 < np.mean(near_std) < 0.01
    # Reproducible per seed.
    again = TabletopEnv(width=160, height=120, depth_noise=True)
    assert np.array_equal(again.reset(seed=2)[0]["depth"], dn)


def test_noise_axial_model_matches_the_formula():
    model = DepthNoise(lateral_sigma_px=0.0, edge_dropout=0.0, hole_count=0.0,
                       pixel_dropout=0.0)
    rng = np.random.default_rng(0)
    for z in (0.5, 1.0, 2.0):
        out = model.apply(np.full((200, 200), z, np.float32), 400.0, rng)
        expect = z * z * model.disparity_sigma_px / (400.0 * model.baseline_m)
        assert abs(np.std(out) / expect - 1) < 0.1
    with pytest.raises(ValueError, match="unknown fields"):
        DepthNoise.from_option({"sigma": 1})
    assert DepthNoise.from_option(False) is None
    assert DepthNoise.from_option({"baseline_m": 0.1}).baseline_m == 0.1
