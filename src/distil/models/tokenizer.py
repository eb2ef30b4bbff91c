"""Tokenizers for language-model distillation: train one on Brown, and fingerprint any.

Here: ``train_bpe_tokenizer`` (a byte-level BPE trained in seconds with HF ``tokenizers`` and
saved as a normal Hugging Face tokenizer folder), ``brown_tokenizer`` (that recipe on the
Brown corpus, cached), and ``vocab_fingerprint``, which is how a logit cache or a
teacher/student pairing checks that two models index the same vocabulary. Not here: loading
pretrained tokenizers from a model folder (``causal_lm.load_tokenizer``) and building datasets.

Token conventions of the trained tokenizers, chosen to behave like SmolLM2-Instruct's:

* ``<|endoftext|>`` (id 0) is bos and eos: it ends a document and, in chat, every turn, so
  ``generate`` stops at the end of the assistant's answer just as SmolLM2 stops at
  ``<|im_end|>``. Nothing is added automatically when encoding (no bos), as with SmolLM2.
* ``<|pad|>`` (id 1) is a separate pad token, so masking labels by ``input_ids != pad_id``
  never masks a real end of text.
* ``<|system|>``, ``<|user|>``, ``<|assistant|>`` open the chat roles (see ``CHAT_TEMPLATE``).

``len(tokenizer)`` is the vocabulary size including added tokens: the size a model's
embedding needs, and what ``vocab_fingerprint`` covers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from distil.errors import ConfigError
from distil.paths import cache_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (END_OF_TEXT, PAD, *ROLE_TOKENS)  # in id order: 0, 1, 2, 3, 4

# Each turn: the role's token, a newline, the content, <|endoftext|>, a newline. The
# generation prompt opens an assistant turn, so the model's answer ends with eos.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|endoftext|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}"
)

# 256 byte symbols plus the special tokens must fit, with room for at least one merge.
_MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + 1

# Bump when the training code changes in a way the recipe below does not capture, so that
# cached tokenizers trained by the old code are not reused.
_RECIPE_VERSION = 1


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: Path
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``texts`` and save it to ``out_dir``.

    Byte-level means every string round-trips exactly (no unknown token, case and
    whitespace kept). The folder loads with ``AutoTokenizer.from_pretrained(out_dir)`` and
    carries ``CHAT_TEMPLATE``; see the module docstring for the special tokens. Training
    is deterministic for the same texts in the same order.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ConfigError(f"vocab_size must be an integer, got {vocab_size!r}")
    if vocab_size < _MIN_VOCAB_SIZE:
        raise ConfigError(
            f"vocab_size {vocab_size} is too small for a byte-level BPE: it needs at least "
            f"{_MIN_VOCAB_SIZE} (256 bytes, {len(SPECIAL_TOKENS)} special tokens and one merge)"
        )
    # Imported here: tokenizers and transformers take seconds to import.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def _brown_recipe(vocab_size: int, archive_name: str) -> dict[str, object]:
    """Everything that decides what ``brown_tokenizer`` trains; its hash names the folder."""
    from distil.data.brown import BROWN_TEXT_VERSION

    return {
        "version": _RECIPE_VERSION,
        "model": "byte-level-bpe",
        "corpus": archive_name,
        "corpus_text_version": BROWN_TEXT_VERSION,
        "vocab_size": vocab_size,
        "min_frequency": 2,
        "special_tokens": list(SPECIAL_TOKENS),
        "chat_template": CHAT_TEMPLATE,
    }


def brown_tokenizer(vocab_size: int = 2048) -> Path:
    """A byte-level BPE trained on all of Brown, cached; returns its folder.

    The folder is ``cache_dir() / "tokenizers" / "brown-bpe-<vocab_size>-<hash>"``, the hash
    covering the recipe (corpus version, vocabulary size, special tokens, chat template), so
    a changed recipe never reuses a stale tokenizer. It goes through the one cache of things
    distil makes for itself (:func:`distil.pretrained.cached_model`): trained into a staging
    folder, sealed with ``checksums.json``, renamed into place, verified on every reuse — a
    damaged tokenizer is set aside and trained again, never loaded. Training takes a few
    seconds; later calls return at once. Under ``accelerate launch`` the main process trains
    and the others wait for it.
    """
    from accelerate import PartialState

    from distil.data.brown import brown_archive, load_brown
    from distil.pretrained import cached_model

    archive = brown_archive()
    recipe = _brown_recipe(vocab_size, archive.name)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    folder = cache_dir() / "tokenizers" / f"brown-bpe-{vocab_size}-{digest}"
    processes = PartialState()

    def produce(work: Path, staging: Path) -> None:
        if not processes.is_main_process:
            return
        # Paragraph by paragraph: the BPE counts words, so how texts are cut hardly matters,
        # and shorter strings keep the trainer's memory flat.
        paragraphs = (
            paragraph for document in load_brown() for paragraph in document.text.split("\n")
        )
        train_bpe_tokenizer(paragraphs, vocab_size, staging)
        (staging / "distil_recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))

    return cached_model(folder, complete="tokenizer.json", produce=produce, accelerator=processes)


def vocab_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A sha256 (hex) of the vocabulary: every (token, id) pair and the special tokens' ids.

    Two tokenizers with the same fingerprint map every token to the same id, wherever they
    were loaded from, so logits computed with one can be read with the other. Adding,
    removing or renumbering a token, or making another token the eos or pad, changes it.
    Added tokens count (``get_vocab`` includes them, as ``len(tokenizer)`` does).
    """
    vocabulary = sorted(tokenizer.get_vocab().items())
    special_ids: dict[str, object] = {}
    for role, token in sorted(tokenizer.special_tokens_map.items()):
        if isinstance(token, (list, tuple)):
            special_ids[role] = [tokenizer.convert_tokens_to_ids(str(item)) for item in token]
        else:
            special_ids[role] = tokenizer.convert_tokens_to_ids(str(token))
    special_ids["all"] = sorted(set(tokenizer.all_special_ids))  # extra special tokens too
    payload = json.dumps({"vocabulary": vocabulary, "special": special_ids}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
