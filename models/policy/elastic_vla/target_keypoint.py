"""Instruction-conditioned target keypoint of ElasticVLA (``ElasticVLAConfig.target_keypoint``).

Why: at 64x64 with 8x8-pixel patches a tabletop object is smaller than one image token, and
the decoder has to find "the blue ball" among the patches and then read its position inside
the patch to better than the ~3 cm a touch allows. Measured on this project's tabletop, that
is what limited the policy (the grounding probe of commit b7636de; README). This module does
the grounding where the resolution is: on a half-resolution (32x32) convolutional feature
map, modulated by the instruction's words (FiLM, Perez et al. 2018), a per-cell score; its
spatial soft-argmax (deep spatial autoencoders, Levine et al. 2016) is the named object's
image position with sub-cell precision, and the depth under it comes with it. The decoder then
gets that keypoint on the robot-state token instead of having to find the object itself.

Two objects may fit an instruction ("the red object" with two red things): a global
soft-argmax would land between them. So the soft-argmax is taken inside a Gaussian window
around the highest-scoring cell (ArgMax + arithmetic: exportable to ONNX as is).

Outside the action path it is trained directly (``TargetKeypoint.loss``): cross-entropy of
the cell scores against the cell holding the target's centre plus the soft-argmax error in
cells (the simulator projects the target with its camera model; privileged, training only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Width (channels) of the keypoint feature map.
KEYPOINT_WIDTH = 32
#: Window around the best cell (std, in cells) inside which the soft-argmax is taken.
WINDOW_SIGMA_CELLS = 1.5
#: Size of the keypoint feature passed on: (u, v) in [0, 1], the encoded depth under it, the
#: point back-projected in normalised camera coordinates ((u - 0.5) z, (v - 0.5) z, z) with z
#: in metres, and the window-pooled features (what is there).
KEYPOINT_FEATURES = 6 + KEYPOINT_WIDTH
#: Added by the effector head (``effector=True``): its (u, v), encoded depth and normalised
#: camera point, and target minus effector in normalised camera coordinates.
EFFECTOR_FEATURES = 6 + 3


def bag_of_words(embedding: nn.Embedding, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean embedding of the instruction's non-padding tokens (B, dim); zeros if none."""
    present = (tokens != pad_id).unsqueeze(-1).to(embedding.weight.dtype)
    return (embedding(tokens) * present).sum(1) / present.sum(1).clamp(min=1.0)


class TargetKeypoint(nn.Module):
    """``logits, keypoint, effector_logits = TargetKeypoint(...)(pixels, tokens)``: cell scores
    (B, G*G) over a G x G grid (G = image_size / 2), the keypoint features (B,
    KEYPOINT_FEATURES, + EFFECTOR_FEATURES with ``effector``) and, with ``effector``, the
    effector's cell scores (B, G*G), else None.

    ``effector``: a second score head on the same features finds the robot's end effector
    (no words: it is the same thing whatever the instruction). Target minus effector in the
    camera's frame does not move with the camera and turns only as far as the camera turns;
    the target alone, back-projected into what the network takes for a fixed camera, is off
    by the whole move (at this tabletop's 0.67 m, 5 cm and 5 degrees put it ~11 cm away)."""

    cell_uv: torch.Tensor  #: buffer (G*G, 2): the (u, v) centre of every cell

    def __init__(self, in_channels: int, image_size: int, vocab_size: int, pad_id: int, use_depth: bool,
                 depth_encoding: str = "log", depth_min_m: float = 0.2, depth_max_m: float = 100.0,
                 sentence_dim: int = 0, effector: bool = False):
        super().__init__()
        w = KEYPOINT_WIDTH
        self.grid = image_size // 2
        self.pad_id = pad_id
        self.use_depth = use_depth
        self.depth_encoding, self.depth_min_m, self.depth_max_m = depth_encoding, depth_min_m, depth_max_m
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GELU())
        # Bag of words: which object is named does not depend on word order here.
        self.words = nn.Embedding(vocab_size, w)
        # sentence_dim > 0: the instruction's sentence embedding joins the bag of words, so a
        # word outside the vocabulary still names its object (zero-initialised: a warm start
        # finds what it found before).
        self.sentence = nn.Linear(sentence_dim, w, bias=False) if sentence_dim else None
        if self.sentence is not None:
            nn.init.zeros_(self.sentence.weight)
        self.film = nn.Linear(w, 2 * w)
        self.mix = nn.Conv2d(w, w, 1)
        self.score = nn.Sequential(nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, 1, 1))
        self.effector_score = (nn.Sequential(nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
                                             nn.Conv2d(w, 1, 1)) if effector else None)
        cells = (torch.arange(self.grid, dtype=torch.float32) + 0.5) / self.grid
        self.register_buffer("cell_uv", torch.stack(torch.meshgrid(cells, cells, indexing="xy"), -1)
                             .reshape(-1, 2), persistent=False)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor, forced_uv: torch.Tensor | None = None,
                sentence: torch.Tensor | None = None):
        """``forced_uv`` (B, 2), optional: where finite, the keypoint is taken at this (u, v)
        instead of the model's own (teacher forcing in training); the logits are unchanged.
        ``sentence`` (B, sentence_dim): the instruction's embedding, for a keypoint built with
        ``sentence_dim``."""
        f = self.stem(pixels)  # (B, w, G, G)
        b, w = f.shape[:2]
        words = bag_of_words(self.words, tokens, self.pad_id)
        if self.sentence is not None:
            words = words + self.sentence(sentence)
        gamma, beta = self.film(words).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        logits = self.score(self.mix(f) * (1.0 + gamma) + beta).flatten(1)  # (B, G*G)
        # Soft-argmax inside a window around the best cell (one target even if two fit).
        centre = self.cell_uv[logits.argmax(-1)]  # (B, 2)
        weights = self.window_weights(logits, centre)
        if forced_uv is not None:
            use = torch.isfinite(forced_uv).all(-1, keepdim=True)
            forced = torch.nan_to_num(forced_uv).clamp(0.0, 1.0)
            # one-hot at the forced cell: depth and features are read there
            one_hot = F.one_hot(self.target_cells(forced), weights.shape[1]).to(weights.dtype)
            weights = torch.where(use, one_hot, weights)
        uv = weights @ self.cell_uv  # (B, 2)
        if forced_uv is not None:
            uv = torch.where(use, forced, uv)
        feats = torch.einsum("bn,bwn->bw", weights, f.flatten(2))
        depth = F.avg_pool2d(pixels[:, 3:4], 2).flatten(1) if self.use_depth else None
        d, xyz = self.point(weights, uv, depth)
        out = [uv, d, xyz, feats]
        effector_logits = None
        if self.effector_score is not None:
            effector_logits = self.effector_score(f).flatten(1)
            e_weights = self.window_weights(effector_logits, self.cell_uv[effector_logits.argmax(-1)])
            e_uv = e_weights @ self.cell_uv
            e_d, e_xyz = self.point(e_weights, e_uv, depth)
            out += [e_uv, e_d, e_xyz, xyz - e_xyz]
        return logits, torch.cat(out, dim=-1), effector_logits

    def point(self, weights: torch.Tensor, uv: torch.Tensor, depth: torch.Tensor | None):
        """The encoded depth under a keypoint (B, 1) and its point in normalised camera
        coordinates ((u - 0.5) z, (v - 0.5) z, z), z in metres (B, 3). Back-projected without
        intrinsics: for a fixed camera a point's position in the robot frame is then a *linear*
        function of these three numbers (rotation, focal lengths and translation folded into
        the next layer's weights)."""
        if depth is None:
            d = torch.zeros(uv.shape[0], 1, dtype=uv.dtype, device=uv.device)
        else:
            d = (weights * depth).sum(-1, keepdim=True)
        z = self.metric_depth(d)
        return d, torch.cat([(uv - 0.5) * z, z], dim=-1)

    def metric_depth(self, encoded: torch.Tensor) -> torch.Tensor:
        """Metres from the depth channel's encoding (ElasticVLAConfig.depth_encoding)."""
        if self.depth_encoding == "log":
            return self.depth_min_m * torch.exp(encoded * math.log(self.depth_max_m / self.depth_min_m))
        return encoded * self.depth_max_m

    def window_weights(self, logits: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """softmax(logits - |cell - centre|^2 / (2 sigma^2)) over the cells, (B, G*G)."""
        sigma = WINDOW_SIGMA_CELLS / self.grid
        d2 = ((self.cell_uv.unsqueeze(0) - centre.unsqueeze(1)) ** 2).sum(-1)
        return torch.softmax(logits - d2 / (2.0 * sigma * sigma), dim=-1)

    def target_cells(self, uv: torch.Tensor) -> torch.Tensor:
        """Index of the cell holding each (u, v) in [0, 1)^2 (B, 2) -> (B,)."""
        col = (uv[:, 0] * self.grid).floor().long().clamp(0, self.grid - 1)
        row = (uv[:, 1] * self.grid).floor().long().clamp(0, self.grid - 1)
        return row * self.grid + col

    def loss(self, logits: torch.Tensor, uv: torch.Tensor, target_uv: torch.Tensor,
             own: torch.Tensor, name: str = "keypoint") -> tuple[torch.Tensor, dict[str, float]]:
        """The keypoint's own loss on rows that have a target (privileged: where the simulator
        projects it), and what to log:

            L_kp = CE(cell scores, the cell holding uv*) + G * mean |uv - uv*|_1

        the second term (the soft-argmax error, in cells) only on the ``own`` rows, whose
        keypoint was the model's, not teacher-forced. logits (N, G*G), uv and target_uv (N, 2).
        The effector head's loss is the same on its own scores and position (logged under
        ``name`` "effector")."""
        cells = self.target_cells(target_uv)
        loss = F.cross_entropy(logits, cells)
        logs = {f"{name}_acc": float((logits.argmax(-1) == cells).float().mean())}
        if own.any():
            error = (uv[own] - target_uv[own]).abs().sum(-1) * self.grid
            loss = loss + error.mean()
            logs[f"{name}_err_px"] = float(error.detach().mean()) * 2.0  # a cell is 2x2 pixels
        logs[name] = float(loss.detach())
        return loss, logs
