"""The IF UNets' configuration: ``IFUNetConfig``, built from a checkpoint's config.json.

The keys and defaults are those of diffusers' ``UNet2DConditionModel`` config, so the
``unet/config.json`` of DeepFloyd/IF-I-{XL,L,M}-v1.0 (stage 1, 64x64) and of
DeepFloyd/IF-II-{L,M}-v1.0 (stage 2, 64 -> 256 super-resolution) reads as it is. Only what
an IF UNet can be is accepted; anything else is refused here, naming the key, before a
layer is built.

    config = IFUNetConfig.from_dict(json.loads(Path("unet/config.json").read_text()))
    config.block_out_channels     # (704, 1408, 2112, 2816) for IF-I-XL
    config.takes_noise_level      # True for stage 2 (class_embed_type "timestep")
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from minidiff.models.if_blocks import ACTIVATIONS

__all__ = ["IFUNetConfig", "DOWN_BLOCKS", "UP_BLOCKS"]

# The block types of IF (both stages), each with whether it has cross-attention layers.
DOWN_BLOCKS = {"ResnetDownsampleBlock2D": False, "SimpleCrossAttnDownBlock2D": True}
UP_BLOCKS = {"ResnetUpsampleBlock2D": False, "SimpleCrossAttnUpBlock2D": True}
MID_BLOCK = "UNetMidBlock2DSimpleCrossAttn"

# Config entries that change the network in ways IF never uses: each must keep this
# value (or be absent), otherwise the config describes another network.
_FIXED = {
    "num_class_embeds": None,
    "time_embedding_type": "positional",
    "time_cond_proj_dim": None,
    "timestep_post_act": None,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embeddings_concat": False,
    "attention_type": "default",
    "num_attention_heads": None,
    "reverse_transformer_layers_per_block": None,
    "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None,
}
_REQUIRED = ("block_out_channels", "down_block_types", "up_block_types")


@dataclass
class IFUNetConfig:
    """The architecture of an IF UNet, stage 1 or 2 (field names and defaults as in diffusers).

    Per-level entries (``layers_per_block``, ``attention_head_dim``, ``only_cross_attention``)
    may be given as one value for every level; they are stored as a tuple with one entry
    per level (down-block order, highest resolution first).
    """

    block_out_channels: tuple[int, ...]  # channels of each resolution level, highest resolution first
    down_block_types: tuple[str, ...]  # one of DOWN_BLOCKS per level
    up_block_types: tuple[str, ...]  # one of UP_BLOCKS per level, lowest resolution first
    mid_block_type: str = MID_BLOCK
    layers_per_block: int | tuple[int, ...] = 2  # ResNets per down level (an up level has one more)
    attention_head_dim: int | tuple[int, ...] = 8  # width of one attention head, per level
    only_cross_attention: bool | tuple[bool, ...] = False  # per level: pixels attend to the text only
    mid_block_only_cross_attention: bool | None = None  # default: only_cross_attention if one bool, else False
    in_channels: int = 4
    out_channels: int = 4
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    center_input_sample: bool = False  # x -> 2x - 1 first
    # time embedding
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    time_embedding_dim: int | None = None  # default 4 * block_out_channels[0]
    time_embedding_act_fn: str | None = None  # applied to the summed embedding
    class_embed_type: str | None = None  # "timestep" (stage 2): the noise level, embedded like t, is added
    # text conditioning
    cross_attention_dim: int = 1280  # width of the text tokens the attention layers read
    encoder_hid_dim: int | None = None  # width of the T5 tokens, projected to cross_attention_dim
    encoder_hid_dim_type: str | None = None  # "text_proj" (implied when encoder_hid_dim is given)
    cross_attention_norm: str | None = None  # "group_norm": GroupNorm on the text tokens
    addition_embed_type: str | None = None  # "text": attention-pooled text added to the time embedding
    addition_embed_type_num_heads: int = 64
    # ResNets
    resnet_time_scale_shift: str = "default"  # "scale_shift": GroupNorm(h) (1 + scale) + shift
    resnet_skip_time_act: bool = False  # True: the ResNets read emb without a further act()
    resnet_out_scale_factor: float = 1.0  # every ResNet outside the mid block divides its sum by this
    mid_block_scale_factor: float = 1.0  # the mid block's ResNets divide their sum by this

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        self.block_out_channels = tuple(self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        self.layers_per_block = _per_level(self.layers_per_block, n, "layers_per_block")
        self.attention_head_dim = _per_level(self.attention_head_dim, n, "attention_head_dim")
        if self.mid_block_only_cross_attention is None:
            # as diffusers: one bool for every level also applies to the mid block; a list does not
            one = isinstance(self.only_cross_attention, bool)
            self.mid_block_only_cross_attention = self.only_cross_attention if one else False
        self.only_cross_attention = _per_level(self.only_cross_attention, n, "only_cross_attention")
        if self.encoder_hid_dim_type is None and self.encoder_hid_dim is not None:
            self.encoder_hid_dim_type = "text_proj"  # diffusers' default when only the width is given
        self._check_blocks()
        self._check_options()

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "IFUNetConfig":
        """The config of a config.json dict; ValueError naming the key for anything an IF UNet is not.

        Entries that do not change the network (sample_size, dropout, _class_name, ...) are ignored.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a dict (the contents of unet/config.json), got {type(config).__name__}")
        for key in _REQUIRED:
            if key not in config:
                raise ValueError(f"config has no {key!r}: is this the unet/config.json of an IF checkpoint?")
        for key, expected in _FIXED.items():
            if key in config and config[key] != expected:
                raise ValueError(f"config {key}={config[key]!r} is not supported (IF uses {expected!r})")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    # -- derived sizes -------------------------------------------------------------------

    @property
    def emb_dim(self) -> int:
        """Width of the per-image embedding (time + pooled text) every ResNet reads."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @property
    def takes_noise_level(self) -> bool:
        """True for a stage-2 (super-resolution) UNet: its call needs the noise level of the low-res image."""
        return self.class_embed_type == "timestep"

    @property
    def text_dim(self) -> int:
        """Width of the ``encoder_hidden_states`` the UNet is called with."""
        return self.encoder_hid_dim if self.encoder_hid_dim_type == "text_proj" else self.cross_attention_dim

    # -- checks --------------------------------------------------------------------------

    def _check_blocks(self) -> None:
        n, down, up = len(self.block_out_channels), self.down_block_types, self.up_block_types
        if len(down) != n or len(up) != n:
            raise ValueError(
                f"config has {n} block_out_channels but {len(down)} down and {len(up)} up block types; they must agree"
            )
        for kind, names, allowed in (("down", down, DOWN_BLOCKS), ("up", up, UP_BLOCKS)):
            for name in names:
                if name not in allowed:
                    raise ValueError(
                        f"{kind} block type {name!r} is not an IF UNet block; expected one of {sorted(allowed)}"
                    )
        if self.mid_block_type != MID_BLOCK:
            raise ValueError(f"mid_block_type {self.mid_block_type!r} is not supported; IF uses {MID_BLOCK!r}")

    def _check_options(self) -> None:
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn {self.act_fn!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
        if self.time_embedding_act_fn not in (None, *ACTIVATIONS):
            raise ValueError(f"time_embedding_act_fn {self.time_embedding_act_fn!r} is not supported")
        if self.resnet_time_scale_shift not in ("default", "scale_shift"):
            raise ValueError(
                f"resnet_time_scale_shift {self.resnet_time_scale_shift!r} must be 'default' or 'scale_shift'"
            )
        if self.cross_attention_norm not in (None, "group_norm"):
            raise ValueError(f"cross_attention_norm {self.cross_attention_norm!r} must be null or 'group_norm'")
        if self.class_embed_type not in (None, "timestep"):
            raise ValueError(
                f"class_embed_type {self.class_embed_type!r} is not supported; IF stage 2 uses 'timestep', stage 1 null"
            )
        if not all(isinstance(v, bool) for v in (*self.only_cross_attention, self.mid_block_only_cross_attention)):
            raise ValueError("only_cross_attention and mid_block_only_cross_attention must be true/false values")
        if self.addition_embed_type not in (None, "text"):
            raise ValueError(f"addition_embed_type {self.addition_embed_type!r} must be null or 'text'")
        if self.encoder_hid_dim_type not in (None, "text_proj"):
            raise ValueError(f"encoder_hid_dim_type {self.encoder_hid_dim_type!r} must be null or 'text_proj'")
        if self.encoder_hid_dim_type == "text_proj" and self.encoder_hid_dim is None:
            raise ValueError("encoder_hid_dim_type 'text_proj' needs encoder_hid_dim (the width of the T5 tokens)")
        if self.norm_num_groups is None:
            raise ValueError("norm_num_groups=null is not supported; IF uses 32")
        if isinstance(self.cross_attention_dim, (list, tuple)):
            raise ValueError("a per-block cross_attention_dim list is not supported; IF uses one integer")


def _per_level(value: Any, n: int, name: str) -> tuple:
    """An int (same for every level) or a list of n values -> tuple of n values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"config {name} has {len(value)} entries but there are {n} down blocks")
        return tuple(value)
    return (value,) * n
