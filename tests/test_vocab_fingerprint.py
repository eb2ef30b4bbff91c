"""Vocabulary fingerprints tell apart tokenizers of the same size.

Token-level distillation compares two distributions column by column, so a teacher and a
student whose tokenizers merely have the same length must still be refused. Bug these tests
catch: ``vocab_fingerprint`` hashing only ``len(vocab)`` (or anything else that ignores the
tokens and their ids).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.errors import ConfigError
from distil.lm.vocab import check_same_tokenizer
from distil.models.causal_lm import load_tokenizer
from distil.models.tokenizer import train_bpe_tokenizer, vocab_fingerprint

VOCAB_SIZE = 280  # 256 bytes + 5 special tokens + 19 merges
TEXTS = {
    "animals": ["the cat sat on the mat with the hat"] * 20
    + ["a bat and a rat ate at the vat"] * 20,
    "buzz": ["zebra zoom zigzag fizz buzz jazz"] * 20 + ["quick quiz quack quill query"] * 20,
}


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> dict[str, Path]:
    """Two byte-level BPEs of one size trained on different texts (so different merges), and
    the first trained a second time into another folder."""
    root = tmp_path_factory.mktemp("bpe")
    folders = {"animals": root / "a", "buzz": root / "b", "animals again": root / "a2"}
    for name, folder in folders.items():
        train_bpe_tokenizer(TEXTS[name.split()[0]], VOCAB_SIZE, folder)
    return folders


def test_same_size_bpes_with_different_merges_have_different_fingerprints(bpe):
    a, b = load_tokenizer(bpe["animals"]), load_tokenizer(bpe["buzz"])
    assert len(a) == len(b) == VOCAB_SIZE
    assert a.get_vocab() != b.get_vocab()
    assert vocab_fingerprint(a) != vocab_fingerprint(b)
    with pytest.raises(ConfigError, match="tokenizers differ"):
        check_same_tokenizer(a, b, vocab_fingerprint, method="kd")


def test_the_same_vocabulary_has_one_fingerprint_wherever_it_is_loaded_from(bpe):
    """The other side: one tokenizer loaded twice, or trained twice the same way, passes."""
    a, again, retrained = (
        load_tokenizer(bpe[name]) for name in ("animals", "animals", "animals again")
    )
    assert vocab_fingerprint(a) == vocab_fingerprint(again) == vocab_fingerprint(retrained)
    check_same_tokenizer(a, retrained, vocab_fingerprint, method="kd")


def word_level(tokens: list[str]):
    """A WordLevel tokenizer giving ``tokens[i]`` the id ``i``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")


def test_same_tokens_with_other_ids_have_different_fingerprints():
    """Same size and even the same set of tokens, but two ids swapped: columns would not
    line up, so the fingerprints must differ."""
    tokens = ["<unk>", "<pad>", "red", "green", "blue", "cyan"]
    swapped = ["<unk>", "<pad>", "green", "red", "blue", "cyan"]
    other = ["<unk>", "<pad>", "one", "two", "three", "four"]
    base = vocab_fingerprint(word_level(tokens))
    assert base == vocab_fingerprint(word_level(list(tokens)))
    assert base != vocab_fingerprint(word_level(swapped))
    assert base != vocab_fingerprint(word_level(other))
