"""Weight fetching: the right files are asked for, and hub refusals become one clear message.

No network: huggingface_hub.snapshot_download is replaced by fakes that record the call or
raise the errors the hub raises for gated repos, missing tokens and offline use.
"""

from __future__ import annotations

import argparse
import huggingface_hub
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

from minidiff import hub
from minidiff.cli import commands, main

SECRET = "hf_thisIsNotARealTokenButMustNeverBePrinted"


def _http_error(cls, status: int):
    """An error as huggingface_hub raises it, with an HTTP response attached."""
    try:
        import httpx2 as httpx  # the HTTP client of current huggingface_hub
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx
    request = httpx.Request("GET", "https://huggingface.co/api/models/DeepFloyd/IF-I-XL-v1.0")
    response = httpx.Response(status, request=request, headers={"authorization": f"Bearer {SECRET}"})
    return cls(f"{status} Client Error", response=response)


def _raising(err):
    def fake(*args, **kwargs):
        raise err

    return fake


@pytest.fixture
def no_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


@pytest.fixture
def with_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: SECRET)


def test_download_unet_asks_only_for_config_and_fp16_weights(monkeypatch, tmp_path):
    calls = []

    def fake_snapshot(repo_id, allow_patterns=None, cache_dir=None, **kwargs):
        calls.append((repo_id, allow_patterns, cache_dir))
        (tmp_path / "unet").mkdir(exist_ok=True)
        (tmp_path / "unet" / "config.json").write_text("{}")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    folder = hub.download_unet("if-i-l", cache_dir=tmp_path / "cache")
    assert folder == tmp_path / "unet"
    assert calls == [
        ("DeepFloyd/IF-I-L-v1.0", ["unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"], tmp_path / "cache")
    ]


def test_fetch_with_t5_also_asks_for_encoder_and_tokenizer(monkeypatch, tmp_path, capsys):
    patterns = []

    def fake_snapshot(repo_id, allow_patterns=None, cache_dir=None, **kwargs):
        patterns.extend(allow_patterns)
        for sub in ("unet", "text_encoder", "tokenizer"):
            (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / "unet" / "config.json").write_text("{}")
        (tmp_path / "text_encoder" / "config.json").write_text("{}")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert main(["fetch", "if-i-xl", "--t5"]) == 0
    assert "tokenizer/*" in patterns and "text_encoder/model.fp16*.safetensors" in patterns
    assert not any("unet/diffusion_pytorch_model.safetensors" == p for p in patterns)  # never the fp32 copy
    assert "T5 ready" in capsys.readouterr().out


def test_gated_repo_without_token_says_what_to_do(monkeypatch, no_token):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raising(_http_error(GatedRepoError, 403)))
    with pytest.raises(hub.HubAccessError) as info:
        hub.download_unet("if-i-xl")
    msg = str(info.value)
    assert "gated" in msg and "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0" in msg and "HF_TOKEN" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_gated_repo_with_token_asks_to_accept_licence_and_never_prints_token(monkeypatch, with_token, capsys):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raising(_http_error(GatedRepoError, 403)))
    assert main(["fetch", "if-i-xl"]) == 2
    err = capsys.readouterr()
    assert "accept the DeepFloyd IF licence" in err.err
    assert SECRET not in err.err and SECRET not in err.out


def test_401_not_found_without_token_asks_for_a_token(monkeypatch, no_token, capsys):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raising(_http_error(RepositoryNotFoundError, 401)))
    assert main(["fetch", "if-i-m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line, no traceback
    assert "needs a token" in err and "DeepFloyd/IF-I-M-v1.0" in err


def test_plain_http_401_and_offline_errors(monkeypatch, with_token):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raising(_http_error(HfHubHTTPError, 401)))
    with pytest.raises(hub.HubAccessError, match="HTTP 401"):
        hub.download_t5()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raising(LocalEntryNotFoundError("offline")))
    with pytest.raises(hub.HubAccessError, match="local cache") as err:
        hub.download_unet("if-i-xl")
    # offline is the moment a first-time user meets this message: it must name licence and token too
    assert "licence" in str(err.value) and "HF_TOKEN" in str(err.value)


def test_unknown_model_name_is_a_value_error():
    with pytest.raises(ValueError, match="if-i-xl"):
        commands.fetch(argparse.Namespace(name="if-ii-xl", t5=False, cache_dir=None))


@pytest.mark.parametrize("name, repo", [("if-ii-l", "DeepFloyd/IF-II-L-v1.0"), ("if-ii-m", "DeepFloyd/IF-II-M-v1.0")])
def test_fetch_stage_two_asks_only_for_its_unet(name, repo, monkeypatch, tmp_path, capsys):
    calls = []

    def fake_snapshot(repo_id, allow_patterns=None, cache_dir=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        (tmp_path / "unet").mkdir(exist_ok=True)
        (tmp_path / "unet" / "config.json").write_text("{}")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert commands.fetch(argparse.Namespace(name=name, t5=False, cache_dir=None)) == 0
    assert calls == [(repo, ["unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"])]
    assert "stage-2 UNet" in capsys.readouterr().out


def test_find_if_unet_keeps_the_stages_apart(monkeypatch, tmp_path):
    """$MINIDIFF_IF_UNET names stage I and $MINIDIFF_IF2_UNET stage II; neither stands in for the other."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    monkeypatch.setenv("MINIDIFF_IF_UNET", str(one))
    monkeypatch.setenv("MINIDIFF_IF2_UNET", str(two))
    assert hub.find_if_unet() == one and hub.find_if_unet(stage=2) == two
    monkeypatch.setenv("MINIDIFF_IF2_UNET", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="MINIDIFF_IF2_UNET"):
        hub.find_if_unet(stage=2)


def test_shipped_weights_dir_follows_the_environment(monkeypatch, tmp_path):
    from minidiff.paths import weights_dir

    monkeypatch.setenv("MINIDIFF_WEIGHTS", str(tmp_path))
    assert weights_dir() == tmp_path
    monkeypatch.setenv("MINIDIFF_WEIGHTS", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="MINIDIFF_WEIGHTS"):
        weights_dir()


def test_from_pretrained_with_a_repo_id_downloads_then_loads(monkeypatch, tmp_path):
    import shutil
    from pathlib import Path

    from minidiff.models.if_unet import IFUNet

    tiny = Path(__file__).parent / "fixtures" / "if_tiny"

    def fake_snapshot(repo_id, allow_patterns=None, cache_dir=None, **kwargs):
        assert repo_id == "DeepFloyd/IF-I-XL-v1.0"
        shutil.copytree(tiny, tmp_path / "unet", dirs_exist_ok=True)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    unet = IFUNet.from_pretrained("DeepFloyd/IF-I-XL-v1.0")
    assert unet.config.block_out_channels == (8, 16, 16, 24)


def test_a_cache_dir_that_is_a_file_is_named_before_any_download(monkeypatch, tmp_path):
    """Offline, the hub would only say "could not reach the hub"; the bad folder is the thing to name."""
    def tripped(*args, **kwargs):
        raise AssertionError("the bad cache_dir was not refused before the download")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", tripped)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=r"cache_dir .*a_file is a file, not a folder"):
        hub.download_unet("if-i-xl", cache_dir=tmp_path / "a_file")
    with pytest.raises(ValueError, match=r"cache_dir .*a_file.t5 cannot be written to"):
        hub.download_t5(cache_dir=tmp_path / "a_file" / "t5")


def test_weights_variable_naming_no_folder_is_named(monkeypatch, tmp_path):
    from minidiff.paths import shipped_dir

    monkeypatch.setenv("MINIDIFF_WEIGHTS", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match=r"^MINIDIFF_WEIGHTS=.*typo is not a folder"):
        shipped_dir("weights")
    assert shipped_dir("lessons").is_dir()  # the variable is only about weights


def test_fetch_draws_no_hub_progress_bars_off_a_terminal(monkeypatch, tmp_path, capsys):
    """Redirected to a log (stderr not a terminal), the hub's download bars stay off, like minidiff's own."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    seen = []

    def fake_snapshot(repo_id, allow_patterns=None, cache_dir=None, **kwargs):
        seen.append(are_progress_bars_disabled())
        (tmp_path / "unet").mkdir(exist_ok=True)
        (tmp_path / "unet" / "config.json").write_text("{}")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    try:
        assert main(["fetch", "if-i-m"]) == 0
    finally:
        enable_progress_bars()
    assert seen == [True]
