"""Fetching the DeepFloyd IF weights (stage I and stage II UNets, T5) from the Hugging Face hub.

The IF checkpoints on the Hugging Face hub are gated: accept the licence on the model page
while logged in, then give huggingface_hub a read token (``HF_TOKEN=...`` in the
environment, or ``hf auth login`` once). Files land in the standard hub cache
(``HF_HOME`` / ``HF_HUB_CACHE``), so diffusers and minidiff share one copy.

Only what sampling needs is downloaded:

    unet/config.json + unet/diffusion_pytorch_model.fp16.safetensors   (I-XL: 8.6 GB, II-L: 2.5 GB)
    text_encoder/ (fp16 T5-XXL encoder, ~9.5 GB) + tokenizer/           (only when asked)

    minidiff fetch if-i-xl [--t5] [--cache-dir DIR]      stage I (if-i-l, if-i-m smaller)
    minidiff fetch if-ii-l [--cache-dir DIR]             stage II, 64 -> 256 (if-ii-m smaller)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "REPOS",
    "HubAccessError",
    "download_unet",
    "download_t5",
    "find_if_unet",
]

REPOS = {
    "if-i-xl": "DeepFloyd/IF-I-XL-v1.0",
    "if-i-l": "DeepFloyd/IF-I-L-v1.0",
    "if-i-m": "DeepFloyd/IF-I-M-v1.0",
    "if-ii-l": "DeepFloyd/IF-II-L-v1.0",  # stage II, 64 -> 256 (1.2B parameters)
    "if-ii-m": "DeepFloyd/IF-II-M-v1.0",
}
STAGE_OF = {name: 2 if name.startswith("if-ii-") else 1 for name in REPOS}
# Every stage-1 repo ships the same T5-XXL encoder; the XL one is the canonical source.
T5_REPO = REPOS["if-i-xl"]

UNET_FILES = ["unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"]
T5_FILES = [
    "text_encoder/config.json",
    "text_encoder/model.fp16*.safetensors",
    "text_encoder/model.safetensors.index.fp16.json",
    "tokenizer/*",
]


class HubAccessError(RuntimeError):
    """The hub refused or could not serve the files; the message says what to do."""


def _has_token() -> bool:
    """Whether huggingface_hub will send a token (never reveals the token itself)."""
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # an unreadable token file counts as no token
        return bool(os.environ.get("HF_TOKEN"))


def _explain(repo_id: str, err: Exception) -> HubAccessError:
    """Turn a huggingface_hub error into one actionable message."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    page = f"https://huggingface.co/{repo_id}"
    token_help = (
        "then create a read token at https://huggingface.co/settings/tokens and either export HF_TOKEN "
        "or run `hf auth login`"
    )
    if isinstance(err, GatedRepoError):
        if _has_token():
            msg = (
                f"{repo_id} is gated and your token has no access yet: open {page} while logged in to "
                "the account that owns the token and accept the DeepFloyd IF licence, then run this again"
            )
        else:
            msg = f"{repo_id} is gated: accept the DeepFloyd IF licence at {page} while logged in, {token_help}"
        return HubAccessError(msg)
    if isinstance(err, RepositoryNotFoundError):
        # The hub answers 401 "not found" for gated repos requested without a token.
        if _has_token():
            return HubAccessError(f"{repo_id} was not found or your token cannot see it; check the name and {page}")
        return HubAccessError(
            f"{repo_id} needs a token: accept the DeepFloyd IF licence at {page} while logged in, {token_help}"
        )
    if isinstance(err, LocalEntryNotFoundError):
        return HubAccessError(
            f"could not reach the hub for {repo_id} and the files are not in the local cache; connect to the "
            "internet (or unset HF_HUB_OFFLINE) and run this again. The download also needs the DeepFloyd IF "
            f"licence accepted at {page} while logged in, and a read token: {token_help.removeprefix('then ')}"
        )
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            return HubAccessError(
                f"the hub refused access to {repo_id} (HTTP {status}): accept the licence at {page}, {token_help}"
            )
        return HubAccessError(f"downloading {repo_id} failed (HTTP {status}); try again later")
    return HubAccessError(f"downloading {repo_id} failed: {type(err).__name__}")


def _snapshot(repo_id: str, patterns: list[str], cache_dir: str | os.PathLike | None) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if cache_dir is not None:  # a file here would read, offline, as "could not reach the hub"
        from minidiff.paths import output_dir

        output_dir(cache_dir, what="cache_dir")
    try:
        root = huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache_dir)
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        # `from None`: the original traceback can carry request headers; keep it out of logs.
        raise _explain(repo_id, err) from None
    return Path(root)


def download_unet(repo_id: str = REPOS["if-i-xl"], cache_dir: str | os.PathLike | None = None) -> Path:
    """Download unet/config.json and the fp16 UNet weights; return the local unet/ folder."""
    repo_id = REPOS.get(repo_id.lower(), repo_id)
    folder = _snapshot(repo_id, UNET_FILES, cache_dir) / "unet"
    if not (folder / "config.json").is_file():
        raise HubAccessError(f"{repo_id} has no unet/config.json; is it a DeepFloyd IF repo (e.g. {REPOS['if-i-xl']})?")
    return folder


def download_t5(repo_id: str = T5_REPO, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download the fp16 T5-XXL encoder and its tokenizer; return the folder holding both."""
    repo_id = REPOS.get(repo_id.lower(), repo_id)
    root = _snapshot(repo_id, T5_FILES, cache_dir)
    if not (root / "tokenizer").is_dir() or not (root / "text_encoder" / "config.json").is_file():
        raise HubAccessError(f"{repo_id} has no text_encoder/ and tokenizer/ folders; use {T5_REPO}")
    return root


def find_if_unet(stage: int = 1) -> Path | None:
    """A local IF UNet folder of the given stage (1: 64 x 64, 2: 64 -> 256), without downloading.

    $MINIDIFF_IF_UNET (stage 1) or $MINIDIFF_IF2_UNET (stage 2), else the hub cache after
    ``minidiff fetch if-i-xl`` / ``if-ii-l``; None when neither has it.
    """
    variable = "MINIDIFF_IF_UNET" if stage == 1 else "MINIDIFF_IF2_UNET"
    env = os.environ.get(variable)
    if env:
        folder = Path(env).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{variable}={env} holds no config.json; point it at IF's unet/ folder")
        return folder
    try:
        from huggingface_hub import try_to_load_from_cache

        for name, repo in REPOS.items():
            if STAGE_OF[name] != stage:
                continue
            cfg = try_to_load_from_cache(repo, "unet/config.json")
            weights = try_to_load_from_cache(repo, "unet/diffusion_pytorch_model.fp16.safetensors")
            if isinstance(cfg, str) and isinstance(weights, str):
                return Path(cfg).parent
    except Exception:  # an unreadable cache is the same as no cache here
        return None
    return None
