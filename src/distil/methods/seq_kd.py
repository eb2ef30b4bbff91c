"""Sequence-level KD (Kim & Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016).

Instead of matching the teacher's distribution at every token, the student is fine-tuned
with plain cross-entropy on the teacher's *outputs*: the teacher continues a prompt taken
from each training block, and the student learns the continuations. The paper decodes the
teacher's mode (beam search; ``decoding: greedy`` here). A small teacher's mode is often a
repetition loop, so by default the teacher *samples* ``samples_per_prompt`` continuations
(sequence-level KD with sampled targets, as in later LLM work): the student then learns the
teacher's distribution over sequences, and gets more text than the prompts alone. Because what passes between them is text,
teacher and student may use different tokenizers: the teacher generates with its own, the
student reads the text with its own. This is the method to use when the vocabulary check of
token-level methods fails.

The generations are written to ``<run>/generations`` atomically, sharded over the launch's
processes, and resume after a kill; one manifest lists every part with its sha256, and the
store is verified when read back (:mod:`distil.lm.generation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field

from distil.data.text import prompt_response_blocks
from distil.methods.base import DataContext, LossOutput, Method, MethodConfig, Need, register_method
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs


class SeqKDConfig(MethodConfig):
    """Settings of sequence-level KD."""

    name: Literal["seq_kd"] = "seq_kd"
    prompt_tokens: int = Field(16, ge=1, description="tokens of each block used as the prompt")
    new_tokens: int = Field(48, ge=1, description="tokens the teacher writes per prompt")
    decoding: Literal["sample", "greedy"] = Field(
        "sample", description="teacher sampling at T = 1, or its greedy mode (the paper)"
    )
    samples_per_prompt: int = Field(4, ge=1, description="continuations per prompt (sampling)")
    batch_size: int = Field(16, ge=1, description="prompts per generation call")
    seed: int = 0


@register_method
class SeqKD(Method):
    """Cross-entropy on teacher-generated continuations of the training prompts."""

    name = "seq_kd"
    Config = SeqKDConfig
    # the teacher writes the data before training, then is not needed; any tokenizer will do
    needs: ClassVar[frozenset[Need]] = frozenset({Need.TEACHER_WRITES_DATA})

    def prepare_data(self, data: Any, context: DataContext) -> Any:
        """The training split replaced by the teacher's continuations of its prompts."""
        from distil.lm.generation import generate_continuations

        config = self.config
        repeats = config.samples_per_prompt if config.decoding == "sample" else 1
        prompts = [
            data.tokenizer.decode(row[: config.prompt_tokens])
            for row in data.train.input_ids
            for _ in range(repeats)
        ]
        records = generate_continuations(
            context.teacher_model, context.teacher_tokenizer, prompts,
            context.run_dir / "generations",
            max_new_tokens=config.new_tokens, batch_size=config.batch_size,
            do_sample=config.decoding == "sample", seed=config.seed,
        )  # fmt: skip
        pairs = [(r["prompt"], r["response"]) for r in records]
        block_size = data.train.block_size
        train = prompt_response_blocks(pairs, data.tokenizer, block_size=block_size)
        return replace(data, train=train)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        return label_and_teacher_terms(student, None, batch["labels"], alpha=0.0)
