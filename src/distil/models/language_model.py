"""A Hugging Face causal LM as a distil network: logits for evaluation, hidden states + head for
the fused loss, and the tokenizer's vocabulary size as the one place logits are cut to.

Checkpoints often pad their embedding matrix beyond the tokenizer (e.g. 152,064 rows for a
151,936-token vocabulary) so the matrix multiply tiles well. Those rows are never real
tokens; every logit distil computes is sliced to ``vocab_size`` (the tokenizer's length), so
a teacher and a student with differently padded heads still compare column for column.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from distil.errors import ConfigError

log = logging.getLogger("distil")


class LanguageModel(nn.Module):
    """Wraps ``AutoModelForCausalLM`` output; ``forward(inputs) -> logits (B, T, vocab_size)``."""

    def __init__(self, hf_model: nn.Module, vocab_size: int, name: str = "model") -> None:
        super().__init__()
        self.hf = hf_model
        rows = self.head.shape[0]
        if rows < vocab_size:
            raise ConfigError(
                f"{name}: its LM head has {rows} rows but the tokenizer has {vocab_size} "
                "tokens; this model cannot score the tokenizer's vocabulary"
            )
        if rows > vocab_size:
            log.info(
                "%s: LM head has %d rows, tokenizer %d tokens; logits are sliced to the "
                "first %d (padding rows ignored)",
                name, rows, vocab_size, vocab_size,
            )  # fmt: skip
        self.vocab_size = vocab_size

    @property
    def head(self) -> Tensor:
        """The LM head's weight ``(rows, H)`` (rows ≥ vocab_size)."""
        return self.hf.get_output_embeddings().weight

    def hidden(self, inputs: dict[str, Tensor]) -> Tensor:
        """Final (normed) hidden states ``(B, T, H)``: what the LM head consumes."""
        outputs = self.hf.base_model(
            input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
        )
        return outputs.last_hidden_state

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Logits ``(B, T, vocab_size)`` (materialised: for evaluation and live teachers)."""
        hidden = self.hidden(inputs)
        logits = hidden @ self.head[: self.vocab_size].to(hidden.dtype).T
        bias = getattr(self.hf.get_output_embeddings(), "bias", None)
        if bias is not None:
            logits = logits + bias[: self.vocab_size]
        return logits

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor, **options) -> Tensor:
        """Sample continuations with the wrapped model (``transformers`` generation)."""
        return self.hf.generate(input_ids=input_ids, attention_mask=attention_mask, **options)
