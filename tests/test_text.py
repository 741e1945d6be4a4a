"""T5 prompt encoding, the embedding cache and course embedding files, all offline.

A tiny SentencePiece model is trained in the test and a tiny random T5 encoder is built
from a config, laid out like an IF repo (text_encoder/ + tokenizer/spiece.model).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from minidiff import text
from minidiff.cli import main

CORPUS = [
    "a photo of a rocket ship",
    "an oil painting of a snowy mountain village",
    "a man wearing a hat",
    "a lithograph of waterfalls",
    "a pencil",
    "an old man",
    "a photo of a dog",
]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    import sentencepiece
    from transformers import T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("t5")
    (root / "tokenizer").mkdir()
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 20))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(root / "tokenizer" / "spiece"),
        vocab_size=40,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    torch.manual_seed(0)
    config = T5Config(vocab_size=40, d_model=16, d_kv=4, num_heads=2, num_layers=2, d_ff=32, feed_forward_proj="gated-gelu")
    T5EncoderModel(config).save_pretrained(root / "text_encoder")
    return root


@pytest.fixture(scope="module")
def t5(t5_dir):
    return text.load_t5(t5_dir, dtype=torch.float32)


def test_tokenizer_appends_eos_pads_and_masks(t5):
    tokenizer, _ = t5
    ids, mask = tokenizer(["a photo of a dog", ""])
    assert ids.shape == mask.shape == (2, 77)
    n = len(tokenizer.sp.encode("a photo of a dog"))
    assert mask[0].sum() == n + 1 and ids[0, n] == 1 and (ids[0, n + 1 :] == 0).all()
    assert ids[1, 0] == 1 and mask[1].sum() == 1  # the empty (null) prompt is just </s>


def test_tokenizer_truncates_to_77_keeping_eos(t5):
    tokenizer, _ = t5
    ids, mask = tokenizer([" ".join(CORPUS * 5)])
    assert mask.sum() == 77 and ids[0, -1] == 1


def test_encode_shape_and_case_insensitive(t5):
    tokenizer, encoder = t5
    e = text.encode_prompts(["A Photo of a Dog  ", "a photo of a dog", ""], tokenizer, encoder)
    assert e.shape == (3, 77, 16) and e.dtype == torch.float32
    assert torch.equal(e[0], e[1])
    assert not torch.allclose(e[1], e[2])


def test_padding_does_not_change_the_real_tokens(t5):
    """The attention mask hides the padding: token states do not depend on how much there is."""
    tokenizer, encoder = t5
    prompt = "an old man wearing a hat"
    n = len(tokenizer.sp.encode(prompt)) + 1
    long = text.encode_prompts([prompt], tokenizer, encoder, max_length=77)
    short = text.encode_prompts([prompt], tokenizer, encoder, max_length=n + 3)
    assert torch.allclose(long[0, :n], short[0, :n], atol=1e-5)


def test_cache_round_trip_merges_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "cache.safetensors"
    a, b = torch.randn(77, 8), torch.randn(1, 77, 8)
    text.save_embedding_cache({"a rocket": a, "": b}, path)
    text.save_embedding_cache({"a dog": a * 2}, path)
    cache = text.load_embedding_cache(path)
    assert set(cache) == {"a rocket", "", "a dog"}
    assert torch.equal(cache["a rocket"], a) and torch.equal(cache[""], b[0])
    assert os.listdir(tmp_path) == ["cache.safetensors"]
    assert text.load_embedding_cache(tmp_path / "none.safetensors") == {}


def test_corrupt_cache_is_a_clear_error(tmp_path):
    path = tmp_path / "cache.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match="corrupt"):
        text.load_embedding_cache(path)


def test_prompt_embeddings_encodes_once_then_reads_the_cache(t5_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache.safetensors"
    first = text.prompt_embeddings(["a pencil", ""], cache=cache, t5=t5_dir)
    assert first.shape == (2, 77, 16)

    def no_t5(*args, **kwargs):
        raise AssertionError("T5 must not be loaded when every prompt is cached")

    monkeypatch.setattr(text, "load_t5", no_t5)
    again = text.prompt_embeddings(["", "a pencil"], cache=cache)
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])


def test_course_embeds_dict_loads_with_weights_only(tmp_path):
    path = tmp_path / "prompt_embeds_dict.pth"
    torch.save({"a rocket ship": torch.randn(1, 77, 8).half(), "": torch.randn(1, 77, 8).half()}, path)
    d = text.load_prompt_embeds_dict(path)
    assert set(d) == {"a rocket ship", ""} and d[""].shape == (77, 8) and d[""].dtype == torch.float16


class _NotATensor:
    pass


def test_course_embeds_dict_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"a": _NotATensor()}, fh, protocol=2)
    with pytest.raises(ValueError, match="loaded safely"):
        text.load_prompt_embeds_dict(path)
    with pytest.raises(FileNotFoundError):
        text.load_prompt_embeds_dict(tmp_path / "missing.pth")


def test_cli_embed_writes_the_cache(t5_dir, tmp_path, capsys, monkeypatch):
    real_load = text.load_t5
    monkeypatch.setattr(text, "load_t5", lambda p, device="cpu": real_load(p, device=device, dtype=torch.float32))
    cache = tmp_path / "c.safetensors"
    assert main(["embed", "a photo of a dog", "a pencil", "--t5", str(t5_dir), "--cache", str(cache)]) == 0
    assert main(["embed", "a pencil", "--t5", str(t5_dir), "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "2 prompt(s) in" in out and "cached 'a pencil'" in out
    assert text.load_embedding_cache(cache)["a pencil"].shape == (77, 16)


def test_embed_from_the_course_file_fills_the_cache_without_t5(tmp_path, capsys, monkeypatch):
    """`minidiff embed --from prompt_embeds_dict.pth`: the course's embeddings go into the cache the lessons read."""
    def no_t5(*args, **kwargs):
        raise AssertionError("copying the course's embeddings needs no T5")

    monkeypatch.setattr(text, "load_t5", no_t5)
    course, cache = tmp_path / "prompt_embeds_dict.pth", tmp_path / "c.safetensors"
    torch.save({"a rocket ship": torch.randn(1, 77, 8), "": torch.randn(1, 77, 8)}, course)
    assert main(["embed", "--from", str(course), "--cache", str(cache)]) == 0
    assert "copied 2 prompt(s)" in capsys.readouterr().out
    assert torch.equal(text.prompt_embeddings(["a rocket ship"], cache=cache)[0],
                       text.load_prompt_embeds_dict(course)["a rocket ship"])
    assert main(["embed", "--cache", str(cache)]) == 2  # neither a prompt nor --from
    assert "give at least one prompt" in capsys.readouterr().err


def test_missing_t5_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        text.load_t5(tmp_path / "no_such_t5")
    (tmp_path / "enc").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        text.load_t5(tmp_path / "enc")


def test_without_t5_the_error_says_which_prompts_and_which_cache(tmp_path, monkeypatch):
    """Not only "could not reach the hub": the prompts lack embeddings and the encoder is not here."""
    from minidiff.hub import HubAccessError

    def offline(*args, **kwargs):
        raise HubAccessError("could not reach the hub for DeepFloyd/IF-I-XL-v1.0")

    monkeypatch.setattr(text, "load_t5", offline)
    cache = tmp_path / "c.safetensors"
    text.save_embedding_cache({"a pencil": torch.randn(77, 8)}, cache)
    with pytest.raises(HubAccessError) as err:
        text.prompt_embeddings(["a pencil", "a dog", "a cat"], cache=cache)
    msg = str(err.value)
    assert msg.startswith(f"no embedding of 'a dog' (and 1 more prompt) in the prompt-embedding cache {cache}, and "
                          "the T5 prompt text encoder that computes them is not on this machine")
    assert "minidiff fetch t5" in msg and msg.endswith("could not reach the hub for DeepFloyd/IF-I-XL-v1.0")
    monkeypatch.setenv("MINIDIFF_EMBED_CACHE", str(tmp_path / "gone" / "c.safetensors"))
    with pytest.raises(HubAccessError, match=r"cache MINIDIFF_EMBED_CACHE=.*gone.c\.safetensors, which does not "
                                             r"exist \(nor does its folder .*gone\)"):
        text.prompt_embeddings(["a pencil"])
