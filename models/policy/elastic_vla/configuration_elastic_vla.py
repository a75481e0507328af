"""Configuration of ElasticVLA, the embedded MiMo-style vision-language-action model (docs/architecture.md).

One dataclass, saved as ``config.json`` next to the weights (the network that reads it is
modeling_elastic_vla.py). Every field is documented once, here; ``__post_init__`` rejects bad
values with the value and the allowed range in the message.

Default sizing: a 64x64 RGB-D image in 8x8 patches gives 64 image tokens; with 16 instruction
tokens, one embodiment+proprio token and 4x3 action query tokens the decoder runs over 93
tokens. A 4-layer, 128-wide decoder (4 heads of 32, SwiGLU 384) is ~0.19 GFLOP per observation,
sized for the 5 ms CPU target (docs/benchmarks.md); its measured latency is in
bench/results/policy_latency*.json (bench/policy_latency.py).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..interface import EMBODIMENT_ACTION_DIM

MODEL_TYPE = "elastic_vla"
VISION_STEMS = ("patch", "conv")
#: Fields that older saved models hold and this code no longer has, with the value at which
#: they were off. ``from_dict`` drops such a field at that value, so older models load; at any
#: other value it refuses the file, since the network the field switched on is gone. Both were a
#: pointing head over the decoder's image tokens (and a soft-argmax readout of it for the action
#: queries): it found the named object's patch but did not improve the actions (README, "What
#: the shipped model does"); the target keypoint replaced it.
REMOVED_FIELDS = {"point_head": False, "point_readout": False}
#: The last commit whose code builds models with a REMOVED_FIELDS field switched on.
REMOVED_FIELDS_LAST_COMMIT = "4bed112"


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (lo <= value <= hi):
        raise ValueError(f"ElasticVLAConfig.{name}={value!r} is outside the allowed range [{lo}, {hi}] (integer)")


def _check_float(name: str, value, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ValueError(f"ElasticVLAConfig.{name}={value!r} is outside the allowed range {bracket}{lo}, {hi}]")


@dataclass
class ElasticVLAConfig:
    """Shape and preprocessing of an ElasticVLA model."""

    # --- input image ---
    image_size: int = 64  #: square side (pixels) the camera image is resized to
    patch_size: int = 8  #: side of a square patch; image_size must be a multiple of it
    use_depth: bool = True  #: add the depth image as a 4th input channel
    depth_max_m: float = 10.0  #: farthest depth (m) the encoding resolves; farther is clipped
    #: "linear": d / depth_max_m (fits a tabletop's metre, but a road's 30 m barrier saturates);
    #: "log": log(d / depth_min_m) / log(depth_max_m / depth_min_m), the same relative
    #: resolution from a table to a road. Both map "no return" (0, NaN) to 0.
    depth_encoding: str = "linear"
    depth_min_m: float = 0.2  #: nearest depth (m) of the "log" encoding; nearer is clipped
    #: "unit": rgb / 255; "image": each colour channel standardised over its own image,
    #: 0.5 + 0.25 * (x - mean) / (std + 4/255), so a dimmer, brighter or tinted room (a scale
    #: and shift of each channel) reaches the network nearly unchanged
    rgb_normalization: str = "unit"

    # --- vision encoder (patch embedding + small ViT, not elastic) ---
    #: "patch": one linear patch_size x patch_size convolution (a ViT patch embedding);
    #: "conv": two 3x3 stride-2 convolutions (32, 64 channels, GELU) then a linear
    #: (patch_size/4)-patch embedding: overlapping, non-linear local features, so a
    #: few-pixel object's colour and shape survive into its token (early convolutions,
    #: Xiao et al. 2021). Same token grid either way.
    vision_stem: str = "patch"
    vision_width: int = 128  #: channels of the patch embedding / vision transformer
    vision_depth: int = 0  #: transformer blocks after the patch embedding (0 = patch embedding only)
    vision_heads: int = 4  #: attention heads of the vision blocks

    # --- decoder (elastic: hidden width, heads, FFN width and depth are sliceable) ---
    hidden_size: int = 128  #: decoder width (token embedding size)
    num_heads: int = 4  #: attention heads; hidden_size must be a multiple of it
    ffn_size: int = 384  #: SwiGLU inner width
    num_layers: int = 4  #: decoder blocks
    rope_theta: float = 10000.0  #: rotary embedding base
    norm_eps: float = 1e-6  #: RMSNorm epsilon

    # --- instruction ---
    vocab_size: int = 512  #: rows of the token embedding; must cover the tokenizer vocabulary
    max_instruction_tokens: int = 16  #: instructions are truncated / padded to this many tokens
    #: the network also reads the instruction's sentence embedding (instruction_encoder.py: a
    #: frozen pretrained encoder, cached per instruction), projected onto the robot-state token
    #: and into the target keypoint's word conditioning: words outside the vocabulary (which the
    #: tokenizer maps to <unk>) still carry their meaning. Zero-initialised projections, so a
    #: warm start from a model without it acts exactly as that model did. Adds the network input
    #: ``instruction_embedding`` (B, 512) to every runtime.
    instruction_embedding: bool = False

    # --- robot state and actions ---
    proprio_dim: int = 8  #: length of Observation.proprio
    #: embodiment -> the proprio entries the model reads (the rest are zeroed); missing = all.
    #: Velocities and the last applied command let behaviour cloning "copy" the motion in
    #: progress instead of looking where the target is (the copycat problem), which fails as
    #: soon as the robot is off the expert's path; leave them out.
    proprio_inputs: dict[str, list[int]] = field(default_factory=dict)
    action_bins: int = 256  #: uniform bins per action dimension over [-1, 1]
    chunk_length: int = 4  #: future control steps emitted per forward pass (action chunk T)
    max_action_dim: int = 3  #: action dims per step (A); smaller embodiments are masked
    #: embodiment name -> number of valid action dims (the leading dims of each step)
    embodiments: dict[str, int] = field(default_factory=lambda: dict(EMBODIMENT_ACTION_DIM))
    #: embodiment name -> [low, high], one list of its action dims each: the action range
    #: the bins span (an action a is binned as 2 (a - low) / (high - low) - 1, and a bin
    #: centre c acts as low + (c + 1) (high - low) / 2). Missing = [-1, 1] on every dim.
    #: Training from a dataset sets it from the dataset's action min/max (meta/stats.json).
    action_range: dict[str, list[list[float]]] = field(default_factory=dict)

    # --- training scaffold ---
    #: outputs of the auxiliary head that training fits to privileged simulator features
    #: (where the target is, relative to the robot; see sim.experts.privileged_features);
    #: 0 = no head. It is not used to act and not exported to ONNX.
    aux_dim: int = 0

    # --- target keypoint (acting; in the vision path, so not elastic) ---
    #: find the instruction's target on a half-resolution convolutional feature map (words
    #: modulate the features; a windowed spatial soft-argmax gives its image position and the
    #: depth there) and add that keypoint to the robot-state token (target_keypoint.py). Part
    #: of the acting network (exported); not elastic. Trained by its own losses on the target's
    #: projected centre (ElasticVLA.forward; weighted by TrainConfig.keypoint_weight).
    target_keypoint: bool = False
    #: embodiments whose robot-state token receives the keypoint (those told to act on a named
    #: object and trained with a keypoint target); the others act exactly as without it
    keypoint_embodiments: list[str] = field(default_factory=lambda: ["arm"])
    #: the keypoint MLP also reads the instruction (a bag of its words): where the robot must
    #: go first can depend on words the keypoint does not encode (a push starts behind the
    #: object, on the side opposite the direction word). Needs target_keypoint.
    keypoint_instruction: bool = False
    #: the keypoint module also finds the robot's own end effector (a second score head on the
    #: same features, not instruction-conditioned) and hands on target minus effector in the
    #: camera's frame: a camera moved by some centimetres shifts both points alike, and one
    #: turned by some degrees turns their difference by as much, where the target alone
    #: back-projected into a fixed camera is off by the whole move. Needs target_keypoint.
    effector_keypoint: bool = False

    # --- task memory ---
    #: the vision encoder also reads the first frame seen after the instruction
    #: (Observation.reference_rgb/depth), stacked as extra input channels: the policy's memory
    #: of where the task started. Without it, "change to the left lane" seen from the middle
    #: lane means "go" (the car started there) or "stay" (it started on the right and has
    #: changed already) on identical observations. Not read by the target keypoint.
    reference_frame: bool = False

    # --- bookkeeping ---
    model_type: str = MODEL_TYPE  #: fixed tag checked on load

    def __post_init__(self) -> None:
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"ElasticVLAConfig.model_type={self.model_type!r}; expected {MODEL_TYPE!r}")
        _check_int("image_size", self.image_size, 8, 1024)
        _check_int("patch_size", self.patch_size, 1, self.image_size)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ElasticVLAConfig.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )
        if not isinstance(self.use_depth, bool):
            raise ValueError(f"ElasticVLAConfig.use_depth={self.use_depth!r} must be True or False")
        _check_float("depth_max_m", self.depth_max_m, 0.0, 1e4, lo_open=True)
        if self.rgb_normalization not in ("unit", "image"):
            raise ValueError(f"ElasticVLAConfig.rgb_normalization={self.rgb_normalization!r} must be 'unit' or 'image'")
        if self.depth_encoding not in ("linear", "log"):
            raise ValueError(f"ElasticVLAConfig.depth_encoding={self.depth_encoding!r} must be 'linear' or 'log'")
        _check_float("depth_min_m", self.depth_min_m, 0.0, self.depth_max_m, lo_open=True)
        if self.depth_encoding == "log" and self.depth_min_m >= self.depth_max_m:
            raise ValueError(
                f"ElasticVLAConfig.depth_min_m={self.depth_min_m} must be below depth_max_m={self.depth_max_m}"
            )
        _check_int("vision_width", self.vision_width, 8, 8192)
        _check_int("vision_depth", self.vision_depth, 0, 64)
        if self.vision_stem not in VISION_STEMS:
            raise ValueError(f"ElasticVLAConfig.vision_stem={self.vision_stem!r} is not one of {VISION_STEMS}")
        if self.vision_stem == "conv" and self.patch_size % 4:
            raise ValueError(f"ElasticVLAConfig.patch_size={self.patch_size} must be a multiple of 4 "
                             "with vision_stem='conv' (two stride-2 convolutions come first)")
        _check_int("vision_heads", self.vision_heads, 1, self.vision_width)
        if self.vision_width % self.vision_heads:
            raise ValueError(
                f"ElasticVLAConfig.vision_width={self.vision_width} must be a multiple of "
                f"vision_heads={self.vision_heads}"
            )
        _check_int("hidden_size", self.hidden_size, 8, 16384)
        _check_int("num_heads", self.num_heads, 1, self.hidden_size)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ElasticVLAConfig.hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"ElasticVLAConfig head_dim={self.head_dim} (hidden_size/num_heads) "
                             "must be even for rotary")
        _check_int("ffn_size", self.ffn_size, 8, 65536)
        _check_int("num_layers", self.num_layers, 1, 128)
        _check_float("rope_theta", self.rope_theta, 1.0, 1e9)
        _check_float("norm_eps", self.norm_eps, 0.0, 1e-2, lo_open=True)
        _check_int("vocab_size", self.vocab_size, 4, 1_000_000)
        _check_int("max_instruction_tokens", self.max_instruction_tokens, 1, 512)
        _check_int("proprio_dim", self.proprio_dim, 1, 1024)
        _check_int("action_bins", self.action_bins, 2, 65536)
        _check_int("chunk_length", self.chunk_length, 1, 256)
        _check_int("max_action_dim", self.max_action_dim, 1, 64)
        _check_int("aux_dim", self.aux_dim, 0, 256)
        if not isinstance(self.target_keypoint, bool):
            raise ValueError(f"ElasticVLAConfig.target_keypoint={self.target_keypoint!r} must be True or False")
        if self.target_keypoint and self.image_size % 2:
            raise ValueError(f"ElasticVLAConfig.image_size={self.image_size} must be even with "
                             "target_keypoint=True (the keypoint grid is half the image size)")
        if not isinstance(self.keypoint_instruction, bool):
            raise ValueError(f"ElasticVLAConfig.keypoint_instruction={self.keypoint_instruction!r} must be "
                             "True or False")
        if not isinstance(self.reference_frame, bool):
            raise ValueError(f"ElasticVLAConfig.reference_frame={self.reference_frame!r} must be "
                             "True or False")
        if not isinstance(self.instruction_embedding, bool):
            raise ValueError(f"ElasticVLAConfig.instruction_embedding={self.instruction_embedding!r} must be "
                             "True or False")
        if not isinstance(self.effector_keypoint, bool):
            raise ValueError(f"ElasticVLAConfig.effector_keypoint={self.effector_keypoint!r} must be "
                             "True or False")
        if self.effector_keypoint and not self.target_keypoint:
            raise ValueError("ElasticVLAConfig.effector_keypoint=True needs target_keypoint=True (a second "
                             "head of the keypoint module)")
        if self.keypoint_instruction and not self.target_keypoint:
            raise ValueError("ElasticVLAConfig.keypoint_instruction=True needs target_keypoint=True (it "
                             "widens the keypoint MLP)")
        unknown = [e for e in self.keypoint_embodiments if e not in self.embodiments]
        if not isinstance(self.keypoint_embodiments, list) or unknown:
            raise ValueError(f"ElasticVLAConfig.keypoint_embodiments={self.keypoint_embodiments!r} must be a "
                             f"list of embodiment names from {sorted(self.embodiments)}")
        if not isinstance(self.proprio_inputs, dict):
            raise ValueError(f"ElasticVLAConfig.proprio_inputs={self.proprio_inputs!r} must be a dict")
        for name, idx in self.proprio_inputs.items():
            if name not in self.embodiments:
                raise ValueError(f"ElasticVLAConfig.proprio_inputs names embodiment {name!r}; "
                                 f"known: {sorted(self.embodiments)}")
            for i in idx:
                _check_int(f"proprio_inputs[{name!r}] entry", i, 0, self.proprio_dim - 1)
        if not isinstance(self.embodiments, dict) or not self.embodiments:
            raise ValueError(f"ElasticVLAConfig.embodiments={self.embodiments!r} must be a non-empty dict name -> dims")
        for name, dims in self.embodiments.items():
            if not isinstance(name, str):
                raise ValueError(f"ElasticVLAConfig.embodiments key {name!r} must be a string")
            _check_int(f"embodiments[{name!r}]", dims, 1, self.max_action_dim)
        if not isinstance(self.action_range, dict):
            raise ValueError(f"ElasticVLAConfig.action_range={self.action_range!r} must be a dict")
        for name, bounds in self.action_range.items():
            n = self.embodiments.get(name)
            ok = (n is not None and isinstance(bounds, (list, tuple)) and len(bounds) == 2
                  and all(isinstance(b, (list, tuple)) and len(b) == n for b in bounds))
            if not ok or not all(hi - lo > 0 for lo, hi in zip(*bounds)):
                raise ValueError(f"ElasticVLAConfig.action_range[{name!r}]={bounds!r} must be "
                                 f"[low, high] with {n} values each and high > low "
                                 f"(embodiments: {sorted(self.embodiments)})")

    # --- derived sizes ---
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def frame_channels(self) -> int:
        """Channels of one camera frame: RGB, plus depth when used."""
        return 4 if self.use_depth else 3

    @property
    def in_channels(self) -> int:
        """Channels of the pixels input: the frame, then the reference frame if used."""
        return self.frame_channels * (2 if self.reference_frame else 1)

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_action_tokens(self) -> int:
        return self.chunk_length * self.max_action_dim

    @property
    def seq_len(self) -> int:
        """Decoder sequence: image, instruction, embodiment+proprio, action queries."""
        return self.num_image_tokens + self.max_instruction_tokens + 1 + self.num_action_tokens

    @property
    def embodiment_names(self) -> list[str]:
        """Embodiment index order used by the model's embodiment embedding (sorted names)."""
        return sorted(self.embodiments)

    # --- JSON ---
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ElasticVLAConfig":
        """The config of a ``to_dict`` (or an older saved model's, see REMOVED_FIELDS)."""
        if not isinstance(data, dict):
            raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        for name, off in REMOVED_FIELDS.items():
            if name in data and data.pop(name) != off:
                raise ValueError(f"config has {name} switched on: that field was removed (only {name}={off!r} "
                                 f"loads); a model that uses it needs the code of commit "
                                 f"{REMOVED_FIELDS_LAST_COMMIT} or earlier")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        from embodied_stack.models.files import atomic_write_json

        atomic_write_json(path, self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ElasticVLAConfig":
        from embodied_stack.models.files import read_json

        return cls.from_dict(read_json(path, "model config"))
