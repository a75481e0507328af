"""Preprocessing of ElasticVLA: observations -> the batch tensors the network reads (resize,
depth encoding, instruction tokens, proprio masking) and action chunks <-> action-bin tokens.
A mixin of ElasticVLA (modeling_elastic_vla.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..interface import Observation
from .instruction_encoder import InstructionEncoder, shared_encoder

if TYPE_CHECKING:
    from .configuration_elastic_vla import ElasticVLAConfig
    from .tokenizer import InstructionTokenizer


class VLAPreprocessing:
    """Observation/action conversions for ElasticVLA (see the module docstring)."""

    if TYPE_CHECKING:
        # The attributes of ElasticVLA (modeling_elastic_vla.py) this mixin reads.
        config: ElasticVLAConfig
        tokenizer: InstructionTokenizer
        _resize_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]
        _token_cache: dict[str, np.ndarray]
        _embodiment_index: dict[str, int]
        _proprio_dropped: dict[str, np.ndarray]
        instruction_encoder: InstructionEncoder | None
        embodiment_action_mask: torch.Tensor  # buffer (E, T*A) bool
        bin_centres: torch.Tensor  # buffer (action_bins,)

    def _resize_index(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        key = (h, w)
        if key not in self._resize_cache:
            s = self.config.image_size
            rows = np.minimum((np.arange(s) * h / s + h / (2 * s)).astype(np.int64), h - 1)
            cols = np.minimum((np.arange(s) * w / s + w / (2 * s)).astype(np.int64), w - 1)
            self._resize_cache[key] = (rows, cols)
        return self._resize_cache[key]

    def _encode_instruction(self, text: str) -> np.ndarray:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = np.asarray(self.tokenizer.encode(text, self.config.max_instruction_tokens), dtype=np.int64)
            if len(self._token_cache) > 1024:
                self._token_cache.clear()
            self._token_cache[text] = ids
        return ids

    def _sentence_encoder(self) -> InstructionEncoder:
        """The encoder of ``instruction_embedding`` models: the model's own if one was set
        (``model.instruction_encoder = InstructionEncoder(backend=...)``), else the process's
        shared one (loaded on first use; every instruction encoded once per process)."""
        return self.instruction_encoder if self.instruction_encoder is not None else shared_encoder()

    def _fill_frame(self, rgb: np.ndarray, depth: np.ndarray | None, pixels: np.ndarray) -> None:
        """Write one camera frame (RGB, then encoded depth) into pixels (frame_channels, S, S)."""
        c = self.config
        if rgb.shape[0] != c.image_size or rgb.shape[1] != c.image_size:
            rows, cols = self._resize_index(rgb.shape[0], rgb.shape[1])
            rgb = rgb[rows][:, cols]
        np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=pixels[:3], casting="unsafe")
        if c.rgb_normalization == "image":  # per channel, over this image (configuration docs)
            mean = pixels[:3].mean(axis=(1, 2), keepdims=True)
            std = pixels[:3].std(axis=(1, 2), keepdims=True)
            pixels[:3] -= mean
            pixels[:3] *= np.float32(0.25) / (std + np.float32(4.0 / 255.0))
            pixels[:3] += np.float32(0.5)
        if c.use_depth:
            if depth is None:
                pixels[3] = 0.0
            else:
                depth = np.asarray(depth, dtype=np.float32)
                if depth.ndim == 3:
                    depth = depth[..., 0]
                if depth.shape[0] != c.image_size or depth.shape[1] != c.image_size:
                    rows, cols = self._resize_index(depth.shape[0], depth.shape[1])
                    depth = depth[rows][:, cols]
                valid = depth > 0.0  # 0 and NaN: no return; +inf: beyond range (clipped)
                if c.depth_encoding == "log":
                    np.clip(depth, c.depth_min_m, c.depth_max_m, out=pixels[3])
                    np.log(pixels[3], out=pixels[3])
                    pixels[3] -= np.float32(np.log(c.depth_min_m))
                    pixels[3] *= np.float32(1.0 / np.log(c.depth_max_m / c.depth_min_m))
                else:
                    np.clip(depth, 0.0, c.depth_max_m, out=pixels[3])
                    pixels[3] *= np.float32(1.0 / c.depth_max_m)
                pixels[3][~valid] = 0.0

    def _fill(self, obs: Observation, pixels: np.ndarray, tokens: np.ndarray, proprio: np.ndarray,
              sentence: np.ndarray | None = None) -> int:
        """Write one observation into preallocated rows (``sentence``: the instruction's
        embedding row, for ``instruction_embedding`` models); return its embodiment index."""
        c = self.config
        n = c.frame_channels
        self._fill_frame(obs.rgb, obs.depth, pixels[:n])
        if c.reference_frame:
            if obs.reference_rgb is None:  # the first frame of the task is its own reference
                pixels[n:] = pixels[:n]
            else:
                self._fill_frame(obs.reference_rgb, obs.reference_depth, pixels[n:])
        tokens[:] = self._encode_instruction(obs.instruction)
        if sentence is not None:
            sentence[:] = self._sentence_encoder().encode(obs.instruction)
        p = np.asarray(obs.proprio, dtype=np.float32).reshape(-1)
        if p.shape[0] > c.proprio_dim:  # (never cut silently: those entries would be lost)
            raise ValueError(f"proprio of {p.shape[0]} entries, the model reads {c.proprio_dim}")
        proprio[: p.shape[0]] = p
        proprio[p.shape[0] :] = 0.0
        if obs.embodiment not in self._embodiment_index:
            raise ValueError(f"embodiment {obs.embodiment!r} not served by this model ({c.embodiment_names})")
        dropped = self._proprio_dropped.get(obs.embodiment)
        if dropped is not None:
            proprio[dropped] = 0.0
        return self._embodiment_index[obs.embodiment]

    def obs_to_batch(self, observations: Sequence[Observation], device: str | torch.device | None = None) -> dict:
        """Stack Observations into the model's input tensors.

        Returns ``pixels`` (B, C, S, S) float32 in [0, 1] (RGB, then encoded depth, see
        ``ElasticVLAConfig.depth_encoding``; then the same for the reference frame when
        ``reference_frame``),
        ``tokens`` (B, L) int64, ``proprio`` (B, P) float32, ``embodiment`` (B,) int64,
        ``action_mask`` (B, T*A) bool (True for the action dims the embodiment uses) and, when
        ``instruction_embedding``, ``instruction_embedding`` (B, 512) float32.
        """
        c = self.config
        n = len(observations)
        pixels = np.empty((n, c.in_channels, c.image_size, c.image_size), np.float32)
        tokens = np.empty((n, c.max_instruction_tokens), np.int64)
        proprio = np.empty((n, c.proprio_dim), np.float32)
        emb = np.empty((n,), np.int64)
        sentence = None
        if c.instruction_embedding:
            encoder = self._sentence_encoder()
            encoder.warm({obs.instruction for obs in observations})  # the new ones in one batch
            sentence = np.empty((n, encoder.dim), np.float32)
        for i, obs in enumerate(observations):
            emb[i] = self._fill(obs, pixels[i], tokens[i], proprio[i], None if sentence is None else sentence[i])
        batch = {
            "pixels": torch.from_numpy(pixels),
            "tokens": torch.from_numpy(tokens),
            "proprio": torch.from_numpy(proprio),
            "embodiment": torch.from_numpy(emb),
        }
        if sentence is not None:
            batch["instruction_embedding"] = torch.from_numpy(sentence)
        batch["action_mask"] = self.embodiment_action_mask.cpu()[batch["embodiment"]]
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        return batch

    # ---------------------------------------------------------------------- actions <-> tokens
    def action_bounds(self, embodiment: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (max_action_dim,): the range the bins span for an embodiment's
        actions (config.action_range; [-1, 1] where it says nothing)."""
        c = self.config
        low, high = -np.ones(c.max_action_dim, np.float32), np.ones(c.max_action_dim, np.float32)
        bounds = c.action_range.get(embodiment) if embodiment is not None else None
        if bounds:
            low[: len(bounds[0])], high[: len(bounds[1])] = bounds[0], bounds[1]
        return low, high

    def _bounds_tensors(self, embodiments, b: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(B, 1, A) low and high for a batch; None when every row spans [-1, 1]."""
        if not self.config.action_range or embodiments is None:
            return None
        names = [embodiments] * b if isinstance(embodiments, str) else list(embodiments)
        pairs = [self.action_bounds(n) for n in names]
        low = torch.from_numpy(np.stack([p[0] for p in pairs])).unsqueeze(1)
        high = torch.from_numpy(np.stack([p[1] for p in pairs])).unsqueeze(1)
        return low, high

    def actions_to_tokens(self, chunks: torch.Tensor | np.ndarray,
                          embodiments: str | Sequence[str] | None = None) -> torch.Tensor:
        """(B, T, a<=A) actions -> (B, T*A) bin ids (unused dims get bin 0). Actions are in
        [-1, 1], or in the embodiment's ``action_range`` when `embodiments` (one name, or one
        per row) names one that has it."""
        c = self.config
        x = torch.as_tensor(np.asarray(chunks, dtype=np.float32) if not torch.is_tensor(chunks) else chunks)
        x = x.float()
        if x.dim() == 2:
            x = x.unsqueeze(0)
        b, t, a = x.shape
        if t != c.chunk_length or a > c.max_action_dim:
            raise ValueError(f"action chunk shape {tuple(x.shape)}; "
                             f"expected (B, {c.chunk_length}, <= {c.max_action_dim})")
        bounds = self._bounds_tensors(embodiments, b)
        if bounds is not None:
            low, high = bounds[0][..., :a], bounds[1][..., :a]
            x = 2.0 * (x - low) / (high - low) - 1.0
        ids = ((x.clamp(-1.0, 1.0) + 1.0) * 0.5 * c.action_bins).long().clamp(0, c.action_bins - 1)
        out = torch.zeros(b, t, c.max_action_dim, dtype=torch.long)
        out[:, :, :a] = ids
        return out.reshape(b, t * c.max_action_dim)

    def tokens_to_actions(self, ids: torch.Tensor, action_dim: int,
                          embodiments: str | Sequence[str] | None = None) -> torch.Tensor:
        """(B, T*A) bin ids -> (B, T, action_dim) bin centres, mapped into the embodiment's
        ``action_range`` when `embodiments` names one that has it."""
        c = self.config
        vals = self.bin_centres.to(ids.device)[ids].reshape(ids.shape[0], c.chunk_length, c.max_action_dim)
        bounds = self._bounds_tensors(embodiments, ids.shape[0])
        if bounds is not None:
            low, high = bounds[0].to(vals.device), bounds[1].to(vals.device)
            vals = low + (vals + 1.0) * 0.5 * (high - low)
        return vals[:, :, :action_dim]
