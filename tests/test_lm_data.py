"""LM data and the vocabulary check: block alignment, domains, prompt masking, document-level
splits, tokenizer fingerprints, padded embedding matrices."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LM_DATA, lm_recipe
from distil.config import parse_config
from distil.data.text import IGNORE_INDEX, chat_blocks, pack_documents, prompt_response_blocks
from distil.errors import ConfigError, DataError
from distil.lm.data import load_lm_data, read_jsonl
from distil.lm.vocab import check_same_tokenizer
from distil.models.causal_lm import load_tokenizer, tiny_causal_lm
from distil.models.language_model import LanguageModel
from distil.models.tokenizer import brown_tokenizer, vocab_fingerprint


def test_packed_blocks_predict_the_next_token_and_never_mix_domains():
    docs = [list(range(10, 30)), list(range(100, 125)), list(range(200, 215))]
    blocks = pack_documents(docs, [0, 1, 0], ["a", "b"], block_size=8, eos_id=0)
    assert torch.equal(blocks.labels[:, :-1], blocks.input_ids[:, 1:])
    for row in range(len(blocks)):
        tokens = set(blocks.input_ids[row].tolist()) - {0}
        in_b = {t for t in tokens if 100 <= t < 125}
        assert not in_b or in_b == tokens, "a block mixes domains"
        assert (blocks.domains[row] == 1) == bool(in_b)
    # Domain a: 20 + 1 + 15 + 1 = 37 tokens -> 4 blocks of 8 (+1 overlap); b: 26 -> 3.
    assert blocks.domains.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_chat_blocks_learn_only_the_answer():
    tokenizer = load_tokenizer(brown_tokenizer(512))
    conversation = [
        {"role": "user", "content": "What is the jury's verdict?"},
        {"role": "assistant", "content": "The jury said no evidence was found."},
    ]
    blocks = chat_blocks([conversation], tokenizer, block_size=64)
    labelled = blocks.labels[0][blocks.labels[0] != IGNORE_INDEX]
    answer = tokenizer.decode(labelled)
    assert "The jury said no evidence was found." in answer
    assert "verdict" not in answer
    length = int(blocks.attention_mask[0].sum())
    assert (blocks.labels[0, length:] == IGNORE_INDEX).all()
    with pytest.raises(DataError, match="must end with an assistant message"):
        chat_blocks([conversation[:1]], tokenizer, block_size=64)


def test_prompt_response_blocks_mask_the_prompt():
    tokenizer = load_tokenizer(brown_tokenizer(512))
    blocks = prompt_response_blocks([("The jury", " said Friday")], tokenizer, block_size=16)
    labelled = blocks.labels[0][blocks.labels[0] != IGNORE_INDEX]
    assert tokenizer.decode(labelled).strip() == "said Friday"


def test_brown_splits_hold_whole_documents_and_every_domain(lm_data):
    assert lm_data.domain_names == ["editorial", "news", "reviews"]
    for split in (lm_data.train, lm_data.val, lm_data.test):
        assert set(split.domains.tolist()) == {0, 1, 2}
    train_rows = {tuple(r) for r in lm_data.train.input_ids.tolist()}
    assert not train_rows & {tuple(r) for r in lm_data.val.input_ids.tolist()}
    assert len(lm_data.val) == LM_DATA["eval_blocks"]
    assert lm_data.train.num_tokens() == lm_data.train.input_ids.numel()


def test_jsonl_corpus_errors_name_the_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"text": "fine"}\n{"body": "x"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: expected an object with 'text'"):
        read_jsonl(path)


def test_jsonl_chat_corpus_loads(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [
        {"prompt": f"Question {i}: how many jurors?", "response": f"There were {i} jurors."}
        for i in range(30)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    config = parse_config(
        lm_recipe(
            tmp_path,
            {"name": "supervised"},
            data={
                "corpus": "jsonl",
                "path": str(path),
                "tokenizer": "brown-bpe-512",
                "block_size": 64,
                "val_fraction": 0.2,
                "test_fraction": 0.2,
            },
        )  # fmt: skip
    )
    data = load_lm_data(config.data)
    assert len(data.train) + len(data.val) + len(data.test) == 30
    first = data.train.labels[0]
    assert tokenizer_text(data, first).strip().startswith("There were")
    assert "jurors?" not in tokenizer_text(data, first)


def tokenizer_text(data, labels):
    return data.tokenizer.decode(labels[labels != IGNORE_INDEX])


def test_vocabulary_check_refuses_another_tokenizer_and_points_to_seq_kd():
    small, large = load_tokenizer(brown_tokenizer(512)), load_tokenizer(brown_tokenizer(640))
    again = load_tokenizer(brown_tokenizer(512))
    check_same_tokenizer(again, small, vocab_fingerprint, method="kd")  # same vocabulary: fine
    with pytest.raises(ConfigError, match="seq_kd"):
        check_same_tokenizer(large, small, vocab_fingerprint, method="kd")


def test_padded_embedding_rows_are_sliced_to_the_tokenizer():
    """One tokenizer, heads of 512 and 576 rows (the padded-vocabulary case): the logits
    agree column for column once both are cut to the tokenizer's 512 tokens."""
    padded = tiny_causal_lm(576, 16, 1, 2, seed=3)
    exact = tiny_causal_lm(512, 16, 1, 2, seed=3)
    state = {k: (v[:512] if v.shape[0] == 576 else v) for k, v in padded.state_dict().items()}
    exact.load_state_dict(state)
    ids = {"input_ids": torch.randint(0, 512, (2, 9))}
    wide, narrow = LanguageModel(padded, 512), LanguageModel(exact, 512)
    assert wide(ids).shape == (2, 9, 512)
    torch.testing.assert_close(wide(ids), narrow(ids))
    with pytest.raises(ConfigError, match="576 rows but the tokenizer has 600"):
        LanguageModel(padded, 600)


def test_a_batch_of_blocks_is_what_collating_its_items_gives(lm_data):
    from torch.utils.data import default_collate

    rows = torch.tensor([5, 0, 17])
    direct = lm_data.train.batch(rows)
    collated = default_collate([lm_data.train[int(i)] for i in rows])
    for key in ("labels", "index", "domain"):
        assert torch.equal(direct[key], collated[key])
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(direct["inputs"][key], collated["inputs"][key])
