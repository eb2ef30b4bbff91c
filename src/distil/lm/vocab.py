"""The vocabulary check that runs before any token-level LM distillation.

Token-level losses compare the teacher's and the student's distributions over the *same*
vocabulary, column by column. Two tokenizers with equal sizes but different merges would
pass a shape check and silently teach garbage, so the check compares fingerprints of the
vocabularies themselves (:func:`distil.models.tokenizer.vocab_fingerprint`). Different
*embedding* sizes under one tokenizer (padded heads: 152,064 rows for 151,936 tokens) are
fine: :class:`~distil.models.language_model.LanguageModel` slices logits to the tokenizer.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from torch import nn

from distil.errors import ConfigError
from distil.lm.config import LMModelConfig

log = logging.getLogger("distil")


def shares_vocabulary(teacher: LMModelConfig, data: Any) -> bool:
    """Whether the teacher's tokenizer is the data's (tiny teachers are built on it)."""
    try:
        check_vocabularies(teacher, data, method="")
    except ConfigError:
        return False
    return True


def check_vocabularies(teacher: LMModelConfig, data: Any, *, method: str) -> None:
    """Refuse a teacher whose tokenizer is not the data's (the student's) tokenizer."""
    if teacher.model is None:
        return  # a tiny teacher is built on the data's tokenizer
    from distil.lm.resolve import model_folder
    from distil.models.causal_lm import load_tokenizer
    from distil.models.tokenizer import vocab_fingerprint

    folder = model_folder(teacher.model)
    try:
        teacher_tokenizer = load_tokenizer(folder)
    except ConfigError:
        raise ConfigError(
            f"teacher.model: {folder} holds no tokenizer, so its vocabulary cannot be checked "
            "against the student's; save the teacher's tokenizer in that folder"
        ) from None
    check_same_tokenizer(teacher_tokenizer, data.tokenizer, vocab_fingerprint, method=method)


def check_same_tokenizer(teacher_tokenizer, student_tokenizer, fingerprint, *, method: str) -> None:
    """ConfigError unless both tokenizers have the same vocabulary fingerprint."""
    ours, theirs = fingerprint(student_tokenizer), fingerprint(teacher_tokenizer)
    if ours == theirs:
        return
    raise ConfigError(
        f"teacher and student tokenizers differ (teacher: {len(teacher_tokenizer)} tokens, "
        f"fingerprint {theirs[:12]}…; student/data: {len(student_tokenizer)} tokens, "
        f"{ours[:12]}…): method {method!r} compares distributions token by token over one "
        "vocabulary. Give both the same tokenizer (data.tokenizer), or use sequence-level KD "
        "(method.name=seq_kd), which trains on the teacher's generated text and works across "
        "tokenizers"
    )


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over a model's parameter names, shapes and values (identifies a teacher)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
