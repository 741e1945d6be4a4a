"""Loading an IF UNet checkpoint (stage 1 or 2): the folder, its config.json, its weights, the strict load.

A checkpoint is a diffusers UNet folder (``unet/`` of DeepFloyd/IF-I-*-v1.0)::

    config.json                                   -> IFUNetConfig (the network to build)
    diffusion_pytorch_model[.fp16].safetensors    -> the tensors, named like the parameters

The network is built on the meta device (no memory, no random initialisation) and the
file's tensors are assigned to it by a strict ``load_state_dict``: every name and shape
must match, with no renaming table. The header and key checks are the ones every minidiff
loader shares (``minidiff.checkpoint``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from torch import nn

from minidiff.checkpoint import check_state_dict, load_safetensors, read_json_config

__all__ = ["WEIGHT_NAMES", "resolve_unet_folder", "find_weights_file", "load_pretrained"]

# The two weight files a diffusers UNet folder may hold, half precision first.
WEIGHT_NAMES = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors")

Model = TypeVar("Model", bound=nn.Module)


def resolve_unet_folder(path: str | os.PathLike) -> Path:
    """A folder with config.json: the given one, its unet/ subfolder, or a hub download."""
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return p
        if (p / "unet" / "config.json").is_file():
            return p / "unet"
        raise FileNotFoundError(f"{p} holds no config.json (nor unet/config.json); point at an IF unet folder")
    if p.exists():
        raise ValueError(f"{p} is a file; pass the folder holding config.json and the .safetensors weights")
    name = str(path)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        from minidiff.hub import download_unet  # network only when asked for a repo id

        return Path(download_unet(name))
    raise FileNotFoundError(f"{p} does not exist; pass an IF unet folder or a hub id like DeepFloyd/IF-I-XL-v1.0")


def find_weights_file(folder: str | os.PathLike, prefer_fp16: bool = True) -> Path:
    """The .safetensors weights in a diffusers UNet folder (fp16 variant first if preferred)."""
    folder = Path(folder)
    names = WEIGHT_NAMES if prefer_fp16 else WEIGHT_NAMES[::-1]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.bin")):
        raise ValueError(f"{folder} holds only .bin (pickle) weights; minidiff reads .safetensors only")
    raise FileNotFoundError(f"no {' or '.join(WEIGHT_NAMES)} in {folder}; run `minidiff fetch if-i-xl`")


def _describe(config: Mapping[str, Any]) -> str:
    keys = ("block_out_channels", "layers_per_block", "cross_attention_dim", "encoder_hid_dim", "attention_head_dim")
    return ", ".join(f"{k}={config.get(k)!r}" for k in keys)


def load_pretrained(
    model_class: type[Model], path: str | os.PathLike, dtype: torch.dtype | None, device: str | torch.device
) -> Model:
    """``model_class.from_config(config.json)`` filled with the folder's weights; eval mode, frozen.

    The fp16 file is preferred unless float32 (or float64) weights are asked for. The file's
    tensors stay memory-mapped when dtype and device match it (no copy).
    """
    folder = resolve_unet_folder(path)
    config = read_json_config(folder / "config.json")
    weights = find_weights_file(folder, prefer_fp16=dtype in (None, torch.float16, torch.bfloat16))
    model = model_class.from_config(config, device="meta")
    state = load_safetensors(weights)
    check_state_dict(model, state, weights, f"the UNet its config.json describes ({_describe(config)})")
    device = torch.device(device)
    state = {k: v.to(device=device, dtype=dtype if (dtype and v.is_floating_point()) else v.dtype)
             for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)
