"""MiniPLM difference sampling (Gu et al., "MiniPLM: Knowledge Distillation for Pre-Training
Language Models", ICLR 2025).

Pre-training KD that costs no teacher forward pass during training: the teacher and a small
*reference* LM (trained on the same corpus) score every training instance once, offline, and
the corpus is refined to the instances where the teacher's log-likelihood most exceeds the
reference's,

    score(x) = (1/|x|) Σ_t [log p_teacher(x_t | x_<t) − log p_reference(x_t | x_<t)],

keeping the top ``keep_fraction``. Easy, common text (the small reference already knows it)
and noise (the teacher finds it unlikely too) are down-sampled; text that needs a large
model's knowledge is kept. The student is then pre-trained on the refined corpus with plain
cross-entropy. The refined corpus (text, domain, score) is written to
``<run>/refined-corpus.jsonl`` for reuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field

from distil.lm.config import LMModelConfig
from distil.methods.base import DataContext, LossOutput, Method, MethodConfig, Need, register_method
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs


class MiniPLMConfig(MethodConfig):
    """Settings of MiniPLM."""

    name: Literal["miniplm"] = "miniplm"
    reference: LMModelConfig = Field(description="the small reference LM (e.g. tiny + pretrain)")
    keep_fraction: float = Field(0.5, gt=0.0, le=1.0, description="share of instances kept")
    batch_size: int = Field(16, ge=1, description="blocks per scoring forward pass")


@register_method
class MiniPLM(Method):
    """Cross-entropy on the teacher-vs-reference refined training corpus."""

    name = "miniplm"
    Config = MiniPLMConfig
    # the teacher scores the corpus before training only
    needs: ClassVar[frozenset[Need]] = frozenset({Need.TEACHER_WRITES_DATA, Need.SAME_VOCABULARY})

    def prepare_data(self, data: Any, context: DataContext) -> Any:
        """Score every training block, keep the top share, write the refined corpus."""
        from distil.data.difference_sampling import difference_scores, write_refined_corpus
        from distil.lm.resolve import build_lm

        reference = build_lm(
            self.config.reference, data.tokenizer, role="method.reference",
            pretrain_data=data.train,
        )  # fmt: skip
        scores = difference_scores(
            context.teacher_model, reference, data.train, batch_size=self.config.batch_size
        )
        keep = max(1, round(self.config.keep_fraction * len(scores)))
        kept = scores.topk(keep).indices.sort().values
        write_refined_corpus(
            context.run_dir / "refined-corpus.jsonl",
            data.train.subset(kept),
            scores[kept],
            data.tokenizer,
        )
        return replace(data, train=data.train.subset(kept))

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        return label_and_teacher_terms(student, None, batch["labels"], alpha=0.0)
