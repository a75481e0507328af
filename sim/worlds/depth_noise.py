"""A depth-sensor noise model, so that perception and policy can be measured on depth that
looks like a real active-stereo camera's (Intel RealSense D400 class) rather than a
renderer's perfect z-buffer. Off by default in every world (``depth_noise=False``).

What it models, after published sensor models:

- **Axial noise growing with distance.** Stereo depth is z = f b / disparity, and the
  disparity estimate has a roughly constant sub-pixel error, so the depth error grows with
  the square of the range: sigma_z = z^2 sigma_d / (f b) (Intel's D400 depth-error model and
  white paper "Tuning depth cameras for best performance": RMS error ~ z^2 x subpixel / (f x
  baseline); sub-pixel RMS ~0.08 px, baseline 50 mm for a D435). Noise is drawn in disparity
  and converted back, as in Handa et al. 2014 (ICL-NUIM) and Barron & Malik's Kinect
  simulator, so far pixels also get the skewed distribution a real sensor shows.
- **Lateral jitter.** The pixel a depth value lands on is shifted by a Gaussian offset
  (sigma ~0.5 px, ICL-NUIM), which frays silhouettes the way block matching does.
- **Edge dropout.** Pixels next to a depth discontinuity (occlusion boundaries, where the
  two imagers see different surfaces) return nothing with probability ``edge_dropout``.
- **Holes.** A few elliptical regions with no return (specular or texture-less patches,
  IR projector shadow) and a sparse random per-pixel dropout.
- **Range limits.** Nothing nearer than ``min_range_m`` (D435: ~0.1-0.28 m) and no return
  beyond ``max_range_m``.

Missing pixels read 0.0 ("no return"), as the worlds' depth does everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import cv2
import numpy as np


@dataclass(frozen=True)
class DepthNoise:
    """Parameters of the noise model; defaults after a RealSense D435."""

    baseline_m: float = 0.05
    disparity_sigma_px: float = 0.08
    lateral_sigma_px: float = 0.5
    edge_jump_m: float = 0.03
    edge_dropout: float = 0.5
    hole_count: float = 2.0  # mean number of elliptical holes per frame (Poisson)
    hole_radius_frac: float = 0.03  # hole radius as a share of the image width
    pixel_dropout: float = 0.003
    min_range_m: float = 0.1
    max_range_m: float = 10.0

    @staticmethod
    def from_option(option) -> "DepthNoise | None":
        """A world's ``depth_noise`` argument: False/None (off), True (defaults), a dict of
        fields, or a DepthNoise."""
        if option is None or option is False:
            return None
        if option is True:
            return DepthNoise()
        if isinstance(option, DepthNoise):
            return option
        if isinstance(option, dict):
            unknown = set(option) - set(asdict(DepthNoise()))
            if unknown:
                raise ValueError(f"depth_noise: unknown fields {sorted(unknown)}")
            return DepthNoise(**option)
        raise ValueError(f"depth_noise must be a bool, dict or DepthNoise, got {option!r}")

    def apply(self, depth: np.ndarray, fx: float, rng: np.random.Generator) -> np.ndarray:
        """A noisy copy of ``depth`` (HxW float32 metres, 0 = no return), focal length
        ``fx`` in pixels."""
        h, w = depth.shape
        out: np.ndarray = depth.astype(np.float32, copy=True)
        # Lateral jitter: each pixel reads its depth from a slightly shifted position.
        if self.lateral_sigma_px > 0:
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            jitter = rng.normal(0.0, self.lateral_sigma_px, size=(2, h, w)).astype(np.float32)
            out = cv2.remap(out, gx + jitter[0], gy + jitter[1], cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_REPLICATE)
        valid = out > 0
        # Axial noise, drawn in disparity: d = f b / z.
        fb = float(fx) * self.baseline_m
        disparity = np.where(valid, fb / np.maximum(out, 1e-6), 0.0)
        disparity += rng.normal(0.0, self.disparity_sigma_px, size=(h, w))
        noisy = np.where(valid & (disparity > 1e-3), fb / np.maximum(disparity, 1e-3), 0.0)
        out = noisy.astype(np.float32)
        # Edge dropout at depth discontinuities of the clean image.
        kernel = np.ones((3, 3), np.uint8)
        clean = depth.astype(np.float32)
        gap = cv2.dilate(clean, kernel) - cv2.erode(clean, kernel)
        edge = gap > self.edge_jump_m
        drop = edge & (rng.random((h, w)) < self.edge_dropout)
        drop |= rng.random((h, w)) < self.pixel_dropout
        # Elliptical holes.
        holes = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.poisson(self.hole_count))):
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = max(1.0, self.hole_radius_frac * w)
            axes = (max(1, int(r * rng.uniform(0.5, 1.5))), max(1, int(r * rng.uniform(0.3, 1.0))))
            cv2.ellipse(holes, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        drop |= holes.astype(bool)
        out[drop] = 0.0
        out[(out < self.min_range_m) | (out > self.max_range_m)] = 0.0
        return out


def noise_generator(episode_rng: np.random.Generator) -> np.random.Generator:
    """The noise's own generator, spawned from the episode's seed sequence: it draws nothing
    from the episode generator, so a scene is the same with noise on or off."""
    # numpy types seed_seq as the ISeedSequence interface; a generator built from a seed
    # (default_rng, gymnasium's np_random: every episode generator here) holds a SeedSequence
    seed_seq = cast(np.random.SeedSequence, episode_rng.bit_generator.seed_seq)
    return np.random.default_rng(seed_seq.spawn(1)[0])
