"""The IF stage-1 UNet's configuration: ``IFUNetConfig``, built from a checkpoint's config.json.

The keys and defaults are those of diffusers' ``UNet2DConditionModel`` config, so the
``unet/config.json`` of DeepFloyd/IF-I-{XL,L,M}-v1.0 reads as it is. Only what IF stage 1
can be is accepted; anything else is refused here, naming the key, before a layer is built.

    config = IFUNetConfig.from_dict(json.loads(Path("unet/config.json").read_text()))
    config.block_out_channels     # (704, 1408, 2112, 2816) for XL
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from minidiff.models.if_blocks import ACTIVATIONS

__all__ = ["IFUNetConfig", "DOWN_BLOCKS", "UP_BLOCKS"]

# The block types of IF stage 1, each with whether it has cross-attention layers.
DOWN_BLOCKS = {"ResnetDownsampleBlock2D": False, "SimpleCrossAttnDownBlock2D": True}
UP_BLOCKS = {"ResnetUpsampleBlock2D": False, "SimpleCrossAttnUpBlock2D": True}
MID_BLOCK = "UNetMidBlock2DSimpleCrossAttn"

# Config entries that change the network in ways IF stage 1 never uses: each must keep
# this value (or be absent), otherwise the config describes another network.
_FIXED = {
    "class_embed_type": None,
    "num_class_embeds": None,
    "time_embedding_type": "positional",
    "time_cond_proj_dim": None,
    "timestep_post_act": None,
    "only_cross_attention": False,
    "mid_block_only_cross_attention": None,
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
    """The architecture of an IF stage-1 UNet (field names and defaults as in diffusers).

    Per-level entries (``layers_per_block``, ``attention_head_dim``) may be given as one
    int for every level; they are stored as a tuple with one entry per level.
    """

    block_out_channels: tuple[int, ...]  # channels of each resolution level, highest resolution first
    down_block_types: tuple[str, ...]  # one of DOWN_BLOCKS per level
    up_block_types: tuple[str, ...]  # one of UP_BLOCKS per level, lowest resolution first
    mid_block_type: str = MID_BLOCK
    layers_per_block: int | tuple[int, ...] = 2  # ResNets per down level (an up level has one more)
    attention_head_dim: int | tuple[int, ...] = 8  # width of one attention head, per level
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
    # text conditioning
    cross_attention_dim: int = 1280  # width of the text tokens the attention layers read
    encoder_hid_dim: int | None = None  # width of the T5 tokens, projected to cross_attention_dim
    encoder_hid_dim_type: str | None = None  # "text_proj" (implied when encoder_hid_dim is given)
    cross_attention_norm: str | None = None  # "group_norm": GroupNorm on the text tokens
    addition_embed_type: str | None = None  # "text": attention-pooled text added to the time embedding
    addition_embed_type_num_heads: int = 64
    # ResNets
    resnet_time_scale_shift: str = "default"  # "scale_shift": GroupNorm(h) (1 + scale) + shift
    resnet_skip_time_act: bool = False
    resnet_out_scale_factor: float = 1.0
    mid_block_scale_factor: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        self.block_out_channels = tuple(self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        self.layers_per_block = _per_level(self.layers_per_block, n, "layers_per_block")
        self.attention_head_dim = _per_level(self.attention_head_dim, n, "attention_head_dim")
        if self.encoder_hid_dim_type is None and self.encoder_hid_dim is not None:
            self.encoder_hid_dim_type = "text_proj"  # diffusers' default when only the width is given
        self._check_blocks()
        self._check_options()

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "IFUNetConfig":
        """The config of a config.json dict; ValueError naming the key for anything IF stage 1 is not.

        Entries that do not change the network (sample_size, dropout, _class_name, ...) are ignored.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a dict (the contents of unet/config.json), got {type(config).__name__}")
        for key in _REQUIRED:
            if key not in config:
                raise ValueError(f"config has no {key!r}: is this the unet/config.json of an IF stage-1 checkpoint?")
        for key, expected in _FIXED.items():
            if key in config and config[key] != expected:
                raise ValueError(f"config {key}={config[key]!r} is not supported (IF stage 1 uses {expected!r})")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    # -- derived sizes -------------------------------------------------------------------

    @property
    def emb_dim(self) -> int:
        """Width of the per-image embedding (time + pooled text) every ResNet reads."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

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
                        f"{kind} block type {name!r} is not an IF stage-1 block; expected one of {sorted(allowed)}"
                    )
        if self.mid_block_type != MID_BLOCK:
            raise ValueError(f"mid_block_type {self.mid_block_type!r} is not supported; IF stage 1 uses {MID_BLOCK!r}")

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
