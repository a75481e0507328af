"""ElasticVLA: the embedded MiMo-style vision-language-action policy (docs/architecture.md).

Architecture (all written here, no external model code):

* vision encoder: conv patchify (RGB + optional depth channel; ``vision_stem``: one linear patch
  convolution, or two 3x3 stride-2 convolutions before it) -> learned position embedding ->
  ``vision_depth`` pre-norm transformer blocks -> RMSNorm;
* MLP projector: Linear -> GELU -> Linear into the decoder width;
* decoder-only transformer (RMSNorm, SwiGLU, rotary attention through
  ``F.scaled_dot_product_attention``) over ``[image tokens, instruction tokens,
  embodiment+proprio token, action query tokens]``;
* an action head mapping every action query token to ``action_bins`` logits.

All ``chunk_length * max_action_dim`` action tokens of a chunk come out of ONE forward pass
(parallel decoding, OpenVLA-OFT style). Because nothing is generated autoregressively, the
decoder attends bidirectionally over the fixed-length sequence (instructions are padded with a
learned ``<pad>`` embedding to a fixed length), so every shape is static: good for ONNX, TensorRT
and CUDA graphs. Token ``t * A + a`` is action dimension ``a`` of chunk step ``t``; dimensions an
embodiment does not use (a vehicle's 3rd) are masked out of ``log_probs``/``entropy``.

Elastic submodels: every decoder weight is read through a prefix slice of its parent parameter
(``weight[:out_active, :in_active]``), a view with no copy. ``set_submodel`` only changes the
active sizes and rebuilds the (no-grad) view cache; skipped layers are identity residuals.

The public API (LeRobot's policy shape):

* ``select_action(observation) -> Action``: acting, the one entry point (the policy node, the
  eval, the benches), through a runtime when one is set (``use_runtime``);
* ``action_logits(pixels, tokens, proprio, embodiment) -> (B, T*A, bins)``: the network, tensors
  in and logits out, which ONNX export, TorchRuntime, torch.compile and CUDA graphs run;
  ``batch_logits(batch)`` calls it on a batch dict (``obs_to_batch``);
* ``forward(batch) -> (loss, logs)``: training; the action cross-entropy and the losses of the
  training-only heads (auxiliary, target keypoint) on privileged simulator targets;
* ``log_probs``/``entropy`` per action token, for RL;
* ``set_submodel`` and ``obs_to_batch``/``actions_to_tokens``/``tokens_to_actions``;
* ``save_pretrained``/``from_pretrained``: config.json + model.safetensors + tokenizer.json.

Files of this package: the configuration is ``configuration_elastic_vla.py``; the network is here
(with saving/loading); its sliceable layers are in ``layers.py``, submodel switching in
``submodel_switching.py``, the conversions between observations/actions and tensors in
``preprocessing.py``, the target keypoint in ``target_keypoint.py`` and the instruction
tokenizer in ``tokenizer.py``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...elastic.submodels import NAMED_SUBMODELS, SubmodelShape
from ..interface import Action, Observation, Policy
from .configuration_elastic_vla import ElasticVLAConfig
from .instruction_encoder import EMBEDDING_DIM, InstructionEncoder
from .layers import Block, ElasticLinear, RMSNorm, rotary_tables
from .preprocessing import VLAPreprocessing
from .submodel_switching import SubmodelSwitching
from .target_keypoint import EFFECTOR_FEATURES, KEYPOINT_FEATURES, KEYPOINT_WIDTH, TargetKeypoint, bag_of_words
from .tokenizer import InstructionTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class ElasticVLA(SubmodelSwitching, VLAPreprocessing, Policy, nn.Module):
    """The embedded default policy; see the module docstring."""

    def __init__(self, config: ElasticVLAConfig | None = None, tokenizer: InstructionTokenizer | None = None):
        nn.Module.__init__(self)
        self.config = config = config or ElasticVLAConfig()
        self.tokenizer = tokenizer or InstructionTokenizer.default()
        if len(self.tokenizer) > config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} words but config.vocab_size={config.vocab_size}; "
                "raise vocab_size"
            )
        c = config
        d = c.hidden_size
        # vision encoder (not elastic)
        if c.vision_stem == "conv":
            k = c.patch_size // 4
            self.patch_embed = nn.Sequential(
                nn.Conv2d(c.in_channels, 32, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(64, c.vision_width, k, stride=k))
        else:
            self.patch_embed = nn.Conv2d(c.in_channels, c.vision_width, c.patch_size, stride=c.patch_size)
        self.vision_pos = nn.Parameter(torch.randn(c.num_image_tokens, c.vision_width) * 0.02)
        self.vision_blocks = nn.ModuleList(
            Block(c.vision_width, c.vision_heads, 2 * c.vision_width, c.norm_eps) for _ in range(c.vision_depth)
        )
        self.vision_norm = RMSNorm(c.vision_width, c.norm_eps)
        # projector: its output width is the (elastic) decoder width
        self.proj_in = nn.Linear(c.vision_width, d)
        self.proj_out = ElasticLinear(d, d, bias=True)
        # token embeddings: instruction words, embodiment + proprio, action queries
        self.tok_embed = nn.Parameter(torch.randn(c.vocab_size, d) * 0.02)
        self.embodiment_embed = nn.Parameter(torch.randn(len(c.embodiments), d) * 0.02)
        self.proprio_proj = ElasticLinear(c.proprio_dim, d, bias=True)
        self.action_queries = nn.Parameter(torch.randn(c.num_action_tokens, d) * 0.02)
        # decoder
        self.layers = nn.ModuleList(Block(d, c.num_heads, c.ffn_size, c.norm_eps) for _ in range(c.num_layers))
        self.final_norm = RMSNorm(d, c.norm_eps)
        self.action_head = ElasticLinear(d, c.action_bins, bias=True)
        # Training scaffold: reads the pooled action-query states (never used to act).
        self.aux_head = ElasticLinear(d, c.aux_dim, bias=True) if c.aux_dim else None
        # Target keypoint: instruction-conditioned soft-argmax on a half-resolution feature
        # map, handed to the decoder on the robot-state token (zero-initialised projection).
        self.keypoint = self.keypoint_in = self.keypoint_aux = self.keypoint_proj = None
        self.keypoint_words = self.keypoint_sentence = None
        # instruction_embedding: the sentence vector onto the robot-state token (zero-initialised,
        # so a warm start from a model without it acts as that model did).
        self.sentence_proj = None
        self.instruction_encoder: InstructionEncoder | None = None  # None: the shared one
        if c.instruction_embedding:
            self.sentence_proj = ElasticLinear(EMBEDDING_DIM, d, bias=False)
            nn.init.zeros_(self.sentence_proj.weight)
            self.sentence_proj.refresh_views()
        if c.target_keypoint:
            self.keypoint = TargetKeypoint(c.frame_channels, c.image_size, c.vocab_size, self.tokenizer.pad_id,
                                           c.use_depth, c.depth_encoding, c.depth_min_m, c.depth_max_m,
                                           sentence_dim=EMBEDDING_DIM if c.instruction_embedding else 0,
                                           effector=c.effector_keypoint)
            # The keypoint and the robot state meet in a small MLP first: the actions depend
            # on where the target is relative to the robot, which is a non-linear function
            # of (u, v, depth) and the proprio that one linear step cannot give the decoder.
            w = 2 * KEYPOINT_WIDTH
            # keypoint_instruction: the instruction's words too (own bag-of-words embedding).
            self.keypoint_words = (nn.Embedding(c.vocab_size, KEYPOINT_WIDTH) if c.keypoint_instruction
                                   else None)
            words_in = KEYPOINT_WIDTH if c.keypoint_instruction else 0
            if c.keypoint_instruction and c.instruction_embedding:  # the sentence joins the words
                self.keypoint_sentence = nn.Linear(EMBEDDING_DIM, KEYPOINT_WIDTH, bias=False)
                nn.init.zeros_(self.keypoint_sentence.weight)
            kp_in = KEYPOINT_FEATURES + (EFFECTOR_FEATURES if c.effector_keypoint else 0)
            self.keypoint_in = nn.Sequential(nn.Linear(kp_in + c.proprio_dim + words_in, w), nn.GELU(),
                                             nn.Linear(w, w), nn.GELU())
            # Training scaffold: the privileged features (target - robot) read off that MLP.
            self.keypoint_aux = nn.Linear(w, c.aux_dim) if c.aux_dim else None
            self.keypoint_proj = ElasticLinear(w, d, bias=True)
            nn.init.zeros_(self.keypoint_proj.weight)
            assert self.keypoint_proj.bias is not None  # built with bias=True
            nn.init.zeros_(self.keypoint_proj.bias)
            self.keypoint_proj.refresh_views()
            self.register_buffer("keypoint_gate", torch.tensor(
                [float(n in c.keypoint_embodiments) for n in c.embodiment_names]), persistent=False)
        # Layer importance order written by calibrate_and_permute (most important first); a
        # submodel with k layers runs layer_rank[:k] in their original order.
        self.register_buffer("layer_rank", torch.arange(c.num_layers, dtype=torch.int64))
        scale = 0.02 / math.sqrt(2 * max(1, c.num_layers))
        for blk in cast("list[Block]", list(self.layers) + list(self.vision_blocks)):
            for lin in (blk.o_proj, blk.down_proj):
                nn.init.normal_(lin.weight, std=scale)
                lin.refresh_views()
        cos, sin = rotary_tables(c.seq_len, c.head_dim, c.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # action bins: uniform over [-1, 1], token value = bin centre
        self.register_buffer("bin_centres", self._bin_centres(c.action_bins), persistent=False)
        mask = torch.zeros(len(c.embodiments), c.num_action_tokens, dtype=torch.bool)
        for i, name in enumerate(c.embodiment_names):
            mask[i] = (torch.arange(c.max_action_dim) < c.embodiments[name]).repeat(c.chunk_length)
        self.register_buffer("embodiment_action_mask", mask, persistent=False)
        self._embodiment_index = {n: i for i, n in enumerate(c.embodiment_names)}
        # Proprio entries each embodiment must not read (config.proprio_inputs), built once:
        # _fill runs on every control tick.
        self._proprio_dropped = {}
        for name, keep in c.proprio_inputs.items():
            dropped = np.ones(c.proprio_dim, bool)
            dropped[list(keep)] = False
            self._proprio_dropped[name] = dropped
        self.submodel_names = list(NAMED_SUBMODELS)
        self._submodel_name = "full"
        self._shape: SubmodelShape | None = None
        self._active_layers: list[int] = list(range(c.num_layers))
        self._active_hidden = d
        self._plans: dict[str, tuple] = {}
        self._runtime = None
        self._use_cache = True  # set_view_cache: off while exporting or compiling
        self._single: dict | None = None
        self._token_cache: dict[str, np.ndarray] = {}
        self._resize_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.eval()
        self.set_submodel("full")

    @staticmethod
    def _bin_centres(bins: int) -> torch.Tensor:
        return ((torch.arange(bins, dtype=torch.float64) + 0.5) / bins * 2.0 - 1.0).float()

    # ---------------------------------------------------------------------- the network
    def action_logits(
        self, pixels: torch.Tensor, tokens: torch.Tensor, proprio: torch.Tensor, embodiment: torch.Tensor,
        instruction_embedding: torch.Tensor | None = None, keypoint: bool = True,
    ) -> torch.Tensor:
        """Logits (B, T*A, bins) of the active submodel: tensors in (the layout of
        :meth:`obs_to_batch`), logits out; what export and the runtimes run. ``keypoint=False``
        leaves the target keypoint out: the same logits for a batch of embodiments that do
        not use it (:meth:`uses_keypoint`), at a fraction of the small submodels' cost."""
        x, _ = self._decoder_states(pixels, tokens, proprio, embodiment, instruction_embedding,
                                    use_keypoint=keypoint)
        return self.action_head(self.final_norm(x[:, -self.config.num_action_tokens:]))

    def batch_logits(self, batch: dict[str, torch.Tensor], keypoint: bool = True) -> torch.Tensor:
        """:meth:`action_logits` of a batch dict (``obs_to_batch``'s; other keys are ignored)."""
        return self.action_logits(batch["pixels"], batch["tokens"], batch["proprio"], batch["embodiment"],
                                  batch.get("instruction_embedding"), keypoint)

    def uses_keypoint(self, embodiment: str) -> bool:
        """Whether acting for `embodiment` needs the target keypoint. Where it does not, the
        keypoint's contribution is gated to zero, and the graph without it (``keypoint=False``)
        gives the same actions without paying for the keypoint's convolutions (a fixed cost
        that every submodel pays, so the largest share of the smallest one's)."""
        return self.keypoint is not None and embodiment in self.config.keypoint_embodiments

    def _decoder_states(self, pixels, tokens, proprio, embodiment, sentence=None, keypoint_forced=None,
                        use_keypoint=True):
        """Decoder output of every token before the final norm (B, sequence, active hidden; acting
        normalises only the action queries' rows), and with ``target_keypoint`` the keypoint's
        (cell logits (B, G*G), (u, v) (B, 2), keypoint+robot features) for its losses, else
        None. ``sentence`` (B, 512): the instruction's embedding (``instruction_embedding``
        models need it). ``keypoint_forced`` (B, 2) hands the keypoint the true (u, v) where
        finite (teacher forcing in training). ``use_keypoint=False`` skips the keypoint (acting
        for embodiments whose gate is zero)."""
        if (sentence is None) != (self.sentence_proj is None):
            raise ValueError("this model " + ("reads the instruction's sentence embedding: pass "
                                              "instruction_embedding (obs_to_batch adds it)"
                                              if sentence is None else "does not read an instruction_embedding"))
        cached = self._use_cache and not torch.is_grad_enabled()
        h = self._active_hidden
        tok_w = self._tok_view if cached else self.tok_embed[:, :h]
        emb_w = self._emb_view if cached else self.embodiment_embed[:, :h]
        queries = self._query_view if cached else self.action_queries[:, :h]
        b = pixels.shape[0]
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.vision_pos
        for blk in self.vision_blocks:
            x = blk(x, None, None)
        img = self.proj_out(F.gelu(self.proj_in(self.vision_norm(x))))
        words = F.embedding(tokens, tok_w)
        state = F.embedding(embodiment, emb_w) + self.proprio_proj(proprio)
        if self.sentence_proj is not None:
            state = state + self.sentence_proj(sentence)
        keypoint = None
        if self.keypoint is not None and use_keypoint:
            kp_logits, kp, effector_logits = self.keypoint(pixels[:, : self.config.frame_channels], tokens,
                                                           keypoint_forced, sentence)
            inputs = [kp, proprio]
            if self.keypoint_words is not None:
                words_kp = bag_of_words(self.keypoint_words, tokens, self.tokenizer.pad_id)
                if self.keypoint_sentence is not None:
                    words_kp = words_kp + self.keypoint_sentence(sentence)
                inputs.append(words_kp)
            fused = self.keypoint_in(torch.cat(inputs, dim=-1))
            # Detached: the keypoint path learns only from its own (privileged) losses; the
            # action loss's gradient, far larger, would drown the geometry it has to learn.
            gate = self.keypoint_gate[embodiment].unsqueeze(-1)
            state = state + gate * self.keypoint_proj(fused.detach())
            # effector (u, v): right after the target's features (KEYPOINT_FEATURES)
            effector_uv = None if effector_logits is None else kp[:, KEYPOINT_FEATURES:KEYPOINT_FEATURES + 2]
            keypoint = (kp_logits, kp[:, :2], fused, effector_logits, effector_uv)
        state = state.unsqueeze(1)
        x = torch.cat([img, words, state, queries.unsqueeze(0).expand(b, -1, -1)], dim=1)
        for i in self._active_layers:
            x = self.layers[i](x, self.rope_cos, self.rope_sin)
        return x, keypoint

    # ---------------------------------------------------------------------- training
    def forward(self, batch: dict[str, torch.Tensor], *, label_smoothing: float = 0.0, aux_weight: float = 1.0,
                keypoint_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """The training loss of the active submodel on one batch, and what to log.

        ``batch``: :meth:`obs_to_batch`'s tensors, plus
        ``action_tokens`` (B, T*A), the action bins to learn (the expert's chunk);
        ``loss_mask`` (B, T*A), optional, the tokens that count (default: the embodiment's dims);
        ``aux_targets`` (B, aux_dim), optional, the privileged features, NaN where unknown;
        ``keypoint_uv`` (B, 2), optional, the target centre's image position, NaN where none;
        ``keypoint_forced`` (B, 2), optional, where finite the keypoint is taken there instead
        of at the model's own (teacher forcing: the decoder learns to use the keypoint before
        the keypoint is good);
        ``effector_uv`` (B, 2), optional, the end effector's image position, NaN where unseen
        (``effector_keypoint`` models: its head's loss, as L_kp).

            loss = CE_smoothed(pi(a | o), a*)              over the counted action tokens
                 + aux_weight * Huber(aux(o), f)           f: the privileged features (where the target is)
                 + keypoint_weight * L_kp                  the keypoint's own loss (TargetKeypoint.loss)
                 + aux_weight * Huber(10 aux_kp(m), f)     m: the keypoint MLP's output, on rows with a target

        The heads' terms apply where the model has the head and the batch the target. Returns
        (loss, logs): ``logs`` holds the floats to record and ``action_logits`` (detached), the
        teacher of the elastic distillation the trainer runs on a sampled submodel.
        """
        x, keypoint = self._decoder_states(batch["pixels"], batch["tokens"], batch["proprio"],
                                           batch["embodiment"], batch.get("instruction_embedding"),
                                           batch.get("keypoint_forced"))
        queries = self.final_norm(x[:, -self.config.num_action_tokens:])
        logits = self.action_head(queries)
        loss = self.action_cross_entropy(logits, batch, label_smoothing)
        logs: dict = {"ce": float(loss.detach())}
        features = batch.get("aux_targets")
        if self.aux_head is not None and features is not None and aux_weight > 0:
            known = torch.isfinite(features)
            if known.any():
                aux_loss = F.smooth_l1_loss(self.aux_head(queries.mean(dim=1))[known], features[known])
                loss = loss + aux_weight * aux_loss
                logs["aux"] = float(aux_loss.detach())
        target_uv = batch.get("keypoint_uv")
        if keypoint is not None and target_uv is not None:
            kp_logits, kp_uv, fused, effector_logits, effector_uv = keypoint
            has_target = torch.isfinite(target_uv).all(-1)
            if has_target.any() and keypoint_weight > 0:
                forced = batch.get("keypoint_forced")
                own = has_target if forced is None else has_target & ~torch.isfinite(forced).all(-1)
                assert self.keypoint is not None  # _decoder_states gave keypoint outputs
                kp_loss, kp_logs = self.keypoint.loss(kp_logits[has_target], kp_uv[has_target],
                                                      target_uv[has_target], own[has_target])
                loss = loss + keypoint_weight * kp_loss
                logs.update(kp_logs)
            where = batch.get("effector_uv")
            if effector_logits is not None and where is not None and keypoint_weight > 0:
                seen = torch.isfinite(where).all(-1)
                if seen.any():
                    assert self.keypoint is not None
                    e_loss, e_logs = self.keypoint.loss(effector_logits[seen], effector_uv[seen], where[seen],
                                                        seen[seen], name="effector")
                    loss = loss + keypoint_weight * e_loss
                    logs.update(e_logs)
            if self.keypoint_aux is not None and features is not None and aux_weight > 0 and has_target.any():
                # The keypoint MLP must work out where the target is relative to the robot.
                # x10: the head works in metres (weights of order 1), the features are in dm.
                wanted = features[has_target]
                known = torch.isfinite(wanted)
                if known.any():
                    read = 10.0 * self.keypoint_aux(fused[has_target])
                    kp_aux_loss = F.smooth_l1_loss(read[known], wanted[known])
                    loss = loss + aux_weight * kp_aux_loss
                    logs["keypoint_aux"] = float(kp_aux_loss.detach())
        logs["action_logits"] = logits.detach()
        return loss, logs

    def action_cross_entropy(self, logits: torch.Tensor, batch: dict[str, torch.Tensor],
                             label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean over the counted tokens of CE(action bin, ``batch["action_tokens"]``), with label
        smoothing over the bins; counted: ``batch["loss_mask"]``, else the embodiment's dims."""
        ce = F.cross_entropy(logits.flatten(0, 1).float(), batch["action_tokens"].flatten(), reduction="none",
                             label_smoothing=label_smoothing)
        mask = batch.get("loss_mask")
        m = (self._mask(batch, ce) if mask is None else mask).flatten().float()
        return (ce * m).sum() / m.sum().clamp_min(1.0)

    # ---------------------------------------------------------------------- RL
    def log_probs(self, batch: dict, action_tokens: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """log pi(token) per action token, (B, T*A); 0 where the embodiment does not use the dim.
        The log-probability of a chunk is the sum over its tokens."""
        logits = self.batch_logits(batch) if logits is None else logits
        lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, action_tokens.long().unsqueeze(-1)).squeeze(-1)
        return lp * self._mask(batch, lp)

    def entropy(self, batch: dict, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Entropy (nats) of each action token's distribution, (B, T*A); 0 on masked dims."""
        logits = self.batch_logits(batch) if logits is None else logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        ent = -(logp.exp() * logp).sum(-1)
        return ent * self._mask(batch, ent)

    def _mask(self, batch: dict, like: torch.Tensor) -> torch.Tensor:
        """The action dims each row's embodiment uses (``batch["action_mask"]`` if given)."""
        mask = batch.get("action_mask")
        if mask is None:
            mask = self.embodiment_action_mask[batch["embodiment"].to(self.embodiment_action_mask.device)]
        return mask.to(like.device, like.dtype)

    # ---------------------------------------------------------------------- control interface
    def use_runtime(self, runtime) -> None:
        """Run select_action through a runtime (models.runtime.*); None = this module, eager."""
        self._runtime = runtime

    @property
    def runtime(self):
        """The runtime select_action goes through (models.runtime.*), or None (eager)."""
        return self._runtime

    @property
    def runtime_description(self) -> str:
        if self._runtime is not None:
            return self._runtime.description
        # the format of TorchRuntime.description (latency tables are keyed by it)
        return f"torch:{next(self.parameters()).device.type}:fp32"

    def warmup(self, embodiment: str) -> None:
        """One inference on a blank observation of the active submodel."""
        from embodied_stack.models.runtime import example_observation

        self.select_action(example_observation(self, embodiment))

    def _single_buffers(self) -> dict:
        if self._single is None:
            c = self.config
            pixels = np.zeros((1, c.in_channels, c.image_size, c.image_size), np.float32)
            tokens = np.zeros((1, c.max_instruction_tokens), np.int64)
            proprio = np.zeros((1, c.proprio_dim), np.float32)
            emb = np.zeros((1,), np.int64)
            sentence = np.zeros((1, EMBEDDING_DIM), np.float32) if c.instruction_embedding else None
            self._single = {
                "np": (pixels, tokens, proprio, emb),
                "sentence": sentence,
                "batch": {
                    "pixels": torch.from_numpy(pixels),
                    "tokens": torch.from_numpy(tokens),
                    "proprio": torch.from_numpy(proprio),
                    "embodiment": torch.from_numpy(emb),
                    **({} if sentence is None else {"instruction_embedding": torch.from_numpy(sentence)}),
                },
                "centres": self._bin_centres(c.action_bins).numpy(),
            }
        return self._single

    def select_action(self, observation: Observation) -> Action:
        """Acting: the action chunk (T, the embodiment's action dims) for one observation, each
        token's most likely bin, from the active submodel (through the runtime if one is set)."""
        t0 = time.perf_counter()
        buf = self._single_buffers()
        pixels, tokens, proprio, emb = buf["np"]
        sentence = buf["sentence"]
        emb[0] = self._fill(observation, pixels[0], tokens[0], proprio[0], None if sentence is None else sentence[0])
        with torch.inference_mode():
            keypoint = self.uses_keypoint(observation.embodiment)
            if self._runtime is not None:
                logits = self._runtime.run(buf["batch"], self._submodel_name, keypoint)
            else:
                logits = self.batch_logits(buf["batch"], keypoint)
            ids = logits[0].argmax(-1)
        c = self.config
        chunk = buf["centres"][ids.cpu().numpy()].reshape(c.chunk_length, c.max_action_dim)
        chunk = chunk[:, : c.embodiments[observation.embodiment]].copy()
        if c.action_range:  # bins span the embodiment's action range, not [-1, 1]
            low, high = self.action_bounds(observation.embodiment)
            a = chunk.shape[1]
            chunk = low[:a] + (chunk + 1.0) * 0.5 * (high[:a] - low[:a])
        return Action(
            chunk=chunk,
            stamp=observation.stamp,
            submodel=self._submodel_name,
            latency_s=time.perf_counter() - t0,
        )

    # ---------------------------------------------------------------------- files
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors and tokenizer.json (each written atomically)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.config.save(out / CONFIG_FILE)
        self.tokenizer.save(out / TOKENIZER_FILE)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = out / f".{WEIGHTS_FILE}.tmp{os.getpid()}"
        save_file(tensors, str(tmp), metadata={"format": "pt", "model_type": self.config.model_type})
        os.replace(tmp, out / WEIGHTS_FILE)
        return out

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu", submodel: str = "full"
    ) -> "ElasticVLA":
        """Load a saved model. Refuses (ValueError) a weights file that does not match the config:
        unreadable/corrupt file, missing or extra keys, wrong shapes or dtypes. Never unpickles."""
        from safetensors import SafetensorError, safe_open

        d = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(
                    f"{d}: missing {name} (expected {CONFIG_FILE}, {WEIGHTS_FILE}, {TOKENIZER_FILE})")
        config = ElasticVLAConfig.load(d / CONFIG_FILE)
        tokenizer = InstructionTokenizer.load(d / TOKENIZER_FILE)
        model = cls(config, tokenizer)
        expected = model.state_dict()
        path = d / WEIGHTS_FILE
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                problems = []
                missing = sorted(set(expected) - keys)
                extra = sorted(keys - set(expected))
                if missing:
                    problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
                if extra:
                    problems.append(f"unexpected keys {extra[:8]}{' ...' if len(extra) > 8 else ''}")
                for k in sorted(keys & set(expected)):
                    sl = f.get_slice(k)
                    shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
                    want_dtype = _SAFETENSORS_DTYPES.get(expected[k].dtype, str(expected[k].dtype))
                    if shape != tuple(expected[k].shape):
                        problems.append(f"{k}: shape {shape} but config needs {tuple(expected[k].shape)}")
                    if dtype != want_dtype:
                        problems.append(f"{k}: dtype {dtype} but model needs {want_dtype}")
                if problems:
                    raise ValueError(f"{path} does not match {d / CONFIG_FILE}: " + "; ".join(problems))
                state = {k: f.get_tensor(k) for k in keys}
        except SafetensorError as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        except OSError as e:
            raise ValueError(f"{path}: cannot read weights ({e})") from e
        for k, v in state.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"{path}: tensor {k} holds NaN or Inf values")
        model.load_state_dict(state, strict=True)
        model.to(device)
        model.eval()
        model.set_submodel(submodel)
        return model


_SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.bool: "BOOL",
    torch.uint8: "U8",
}
