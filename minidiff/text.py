"""Prompt embeddings for DeepFloyd IF: T5-XXL encoding, an embedding cache, course files.

IF conditions on the last hidden states of the T5 v1.1 XXL encoder (Raffel et al., 2020):
a prompt becomes 77 token vectors of width 4096, (77, 4096). Like IF (and diffusers'
IFPipeline without caption cleaning) we lower-case and strip the prompt, tokenise it with
T5's SentencePiece model, append the end-of-sequence token, truncate to 77 tokens, pad
with the pad token (id 0) and pass the attention mask, so padding is not attended to. The
padded positions keep the encoder's outputs (they are not zeroed), as in diffusers.

T5-XXL is 4.8B parameters (9.5 GB in fp16), so embeddings are computed once and kept in
a cache, a safetensors file mapping each prompt to its (77, 4096) tensor; lessons read
the cache and never load T5 twice. The course's precomputed ``prompt_embeds_dict.pth``
(a dict prompt -> (1, 77, 4096)) can be read too, and copied into the cache with
``minidiff embed --from prompt_embeds_dict.pth``.

    minidiff embed "an oil painting of a snowy mountain village" "a rocket ship"
    embeds = prompt_embeddings(["a rocket ship", ""])        # (2, 77, 4096), from the cache
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import torch

from minidiff.checks import nonempty_list

from minidiff.hub import HubAccessError

__all__ = [
    "MAX_LENGTH",
    "T5Tokenizer",
    "load_t5",
    "encode_prompts",
    "default_cache_path",
    "load_embedding_cache",
    "save_embedding_cache",
    "load_prompt_embeds_dict",
    "prompt_embeddings",
]

MAX_LENGTH = 77
DEFAULT_T5 = "DeepFloyd/IF-I-XL-v1.0"  # holds text_encoder/ (fp16) and tokenizer/
_KEY_PREFIX = "prompt:"  # safetensors keys must be non-empty; the empty prompt is the CFG null prompt


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    """prompts as a list; ValueError unless it is a non-empty list of strings."""
    prompts = nonempty_list(prompts, "prompts", "strings",
                            'prompts is empty; give at least one prompt (the empty prompt "" is the CFG null prompt)')
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompts[{i}] must be a string, got {type(p).__name__}")
    return prompts


def _normalise(prompt: str) -> str:
    """IF's caption preprocessing without the optional cleaning: lower-case, strip."""
    return prompt.lower().strip()


class T5Tokenizer:
    """T5's tokenizer on SentencePiece directly, padded and masked the way IF does it.

    ids = sentencepiece(prompt)[: max_length - 1] + [eos];  then pad with pad_id to max_length.
    The same ids as transformers' (slow) T5Tokenizer for ordinary text, without needing
    protobuf to convert the SentencePiece model.
    """

    def __init__(self, spiece_model: str | os.PathLike, pad_id: int = 0, eos_id: int = 1):
        import sentencepiece

        path = Path(spiece_model)
        if path.is_dir():
            path = path / "spiece.model"
        if not path.is_file():
            raise FileNotFoundError(f"no SentencePiece model at {path}; expected the tokenizer/spiece.model of T5")
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.pad_id, self.eos_id = pad_id, eos_id

    def __call__(self, prompts: Sequence[str], max_length: int = MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> (input_ids, attention_mask), both (B, max_length) int64."""
        ids = torch.full((len(prompts), max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), max_length), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            tokens = self.sp.encode(prompt)[: max_length - 1] + [self.eos_id]
            ids[i, : len(tokens)] = torch.tensor(tokens)
            mask[i, : len(tokens)] = 1
        return ids, mask


def _t5_folders(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder) of a local T5 or a hub repo id (downloaded)."""
    p = Path(name_or_path).expanduser()
    if not p.exists():
        text = str(name_or_path)
        if text.count("/") != 1 or text.startswith((".", "/", "~")):
            raise FileNotFoundError(f"no T5 folder at {p}; pass a folder or a hub id like {DEFAULT_T5}")
        from minidiff.hub import download_t5

        p = download_t5(text)
    if (p / "text_encoder").is_dir():
        return p / "text_encoder", p / "tokenizer"
    return p, p


def load_t5(
    name_or_path: str | os.PathLike = DEFAULT_T5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
):
    """Load (tokenizer, encoder) from a folder or hub id.

    The folder either holds ``text_encoder/`` and ``tokenizer/`` (an IF repo) or is itself a
    T5 encoder folder with ``spiece.model``. dtype defaults to float16 on a GPU and
    bfloat16 on the CPU (T5-XXL in fp32 needs 19 GB; fp16 overflows in some CPU kernels).
    """
    from transformers import T5EncoderModel

    enc_dir, tok_dir = _t5_folders(name_or_path)
    if not (enc_dir / "config.json").is_file():
        raise FileNotFoundError(f"no T5 encoder config.json in {enc_dir}")
    tokenizer = T5Tokenizer(tok_dir)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    variant = "fp16" if any(enc_dir.glob("*.fp16*.safetensors")) else None
    encoder = T5EncoderModel.from_pretrained(enc_dir, dtype=dtype, variant=variant)
    return tokenizer, encoder.to(device).eval().requires_grad_(False)


@torch.no_grad()
def encode_prompts(prompts: Sequence[str], tokenizer: T5Tokenizer, encoder, max_length: int = MAX_LENGTH) -> torch.Tensor:
    """T5 last hidden states of the prompts: (B, max_length, d_model), in the encoder's dtype."""
    prompts = _check_prompts(prompts)
    ids, mask = tokenizer([_normalise(p) for p in prompts], max_length)
    device = next(encoder.parameters()).device
    out = encoder(input_ids=ids.to(device), attention_mask=mask.to(device))
    return out.last_hidden_state


# ----------------------------------------------------------------------------------------
# The embedding cache
# ----------------------------------------------------------------------------------------


def default_cache_path() -> Path:
    """$MINIDIFF_EMBED_CACHE, else ~/.cache/minidiff/prompt_embeds.safetensors."""
    env = os.environ.get("MINIDIFF_EMBED_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minidiff" / "prompt_embeds.safetensors"


def load_embedding_cache(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """prompt -> (77, D) tensor; an empty dict when the cache file does not exist yet."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser() if path is not None else default_cache_path()
    if not path.exists():
        return {}
    if not path.is_file():
        raise ValueError(f"embedding cache {path} is not a file; pass the path of a .safetensors file")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"embedding cache {path} is corrupt ({err}); delete it and run `minidiff embed` again"
        ) from err
    cache = {k[len(_KEY_PREFIX):]: v for k, v in raw.items() if k.startswith(_KEY_PREFIX)}
    for prompt, e in cache.items():
        if e.ndim != 2 or not e.is_floating_point():
            raise ValueError(
                f"embedding cache {path} is corrupt: {prompt!r} has shape {tuple(e.shape)} and dtype {e.dtype}, "
                "expected a float (T, D) tensor; delete the file and run `minidiff embed` again"
            )
    return cache


def save_embedding_cache(embeds: Mapping[str, torch.Tensor], path: str | os.PathLike | None = None) -> Path:
    """Merge embeds into the cache file (written to a temp file, then renamed)."""
    from safetensors.torch import save_file

    path = Path(path) if path is not None else default_cache_path()
    merged = load_embedding_cache(path)
    for prompt, e in embeds.items():
        e = e.detach().to("cpu")
        if e.ndim == 3 and e.shape[0] == 1:
            e = e[0]
        if e.ndim != 2:
            raise ValueError(f"embedding of {prompt!r} must be (T, D), got shape {tuple(e.shape)}")
        merged[prompt] = e
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file({_KEY_PREFIX + k: v.contiguous() for k, v in merged.items()}, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_prompt_embeds_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a course-style ``prompt_embeds_dict.pth`` ({prompt: (1, 77, 4096)}) safely.

    Only plain tensors are accepted (``torch.load(..., weights_only=True)``); each entry
    comes back as (77, 4096).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt embedding file at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused or a corrupt file
        raise ValueError(f"{path} is not a plain dict of tensors that can be loaded safely ({err})") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a dict prompt -> tensor")
    out = {}
    for prompt, e in data.items():
        if not isinstance(prompt, str) or not isinstance(e, torch.Tensor):
            raise ValueError(f"{path}: entries must be str -> tensor, found {type(prompt).__name__} -> {type(e).__name__}")
        if e.ndim == 3 and e.shape[0] == 1:
            e = e[0]
        if e.ndim != 2:
            raise ValueError(f"{path}: embedding of {prompt!r} has shape {tuple(e.shape)}, expected (1, T, D) or (T, D)")
        out[prompt] = e
    return out


def prompt_embeddings(
    prompts: Sequence[str],
    cache: str | os.PathLike | None = None,
    t5: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """(B, 77, D) embeddings of the prompts: from the cache, else encoded with T5.

    T5 is loaded only when a prompt is missing, and new embeddings are added to the cache.
    """
    prompts = _check_prompts(prompts)
    known = load_embedding_cache(cache)
    missing = _missing(prompts, known)
    if missing:
        try:
            tokenizer, encoder = load_t5(t5 or DEFAULT_T5, device=device)
        except HubAccessError as err:  # say what is missing (T5, or the embeddings), not only what the hub said
            raise HubAccessError(f"{_not_cached(missing, cache)}, and the T5 prompt text encoder that computes "
                                 f"them is not on this machine: run 'minidiff fetch t5', then 'minidiff embed' "
                                 f"with the prompts, or point MINIDIFF_EMBED_CACHE at a cache that holds them. "
                                 f"Fetching T5: {err}") from None
        fresh = dict(zip(missing, encode_prompts(missing, tokenizer, encoder)))
        save_embedding_cache(fresh, cache)
        known.update(fresh)
    embeds = [known[p] for p in prompts]
    for p, e in zip(prompts, embeds):
        if e.shape != embeds[0].shape:
            raise ValueError(
                f"the embedding of {p!r} has shape {tuple(e.shape)} but that of {prompts[0]!r} "
                f"{tuple(embeds[0].shape)}; all must come from the same T5 (re-embed them together)"
            )
    return torch.stack(embeds)


def _not_cached(missing: Sequence[str], cache: str | os.PathLike | None) -> str:
    """"no embedding of 'a pencil' (and 2 more prompts) in the prompt-embedding cache PATH, which does not exist"."""
    path = Path(cache).expanduser() if cache is not None else default_cache_path()
    env = os.environ.get("MINIDIFF_EMBED_CACHE")
    where = f"MINIDIFF_EMBED_CACHE={path}" if env and Path(env).expanduser() == path else str(path)
    state = "" if path.is_file() else ", which does not exist" + (
        f" (nor does its folder {path.parent})" if not path.parent.is_dir() else "")
    n = len(missing) - 1
    more = f" (and {n} more prompt{'s' if n > 1 else ''})" if n else ""
    return f"no embedding of {missing[0]!r}{more} in the prompt-embedding cache {where}{state}"


def _missing(prompts: Sequence[str], known: Mapping[str, torch.Tensor]) -> list[str]:
    """The distinct prompts without an embedding in ``known``, in order."""
    return [p for p in dict.fromkeys(prompts) if p not in known]
