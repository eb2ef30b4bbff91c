"""Rank a recipe's candidate students by their DisWOT score against its teacher."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate.utils import set_seed
from torch.utils.data import default_collate

from distil.data import DataSplits
from distil.models import build_model
from distil.search.diswot import diswot_score, signature
from distil.tasks.classification import ClassificationConfig, StudentConfig


@dataclass
class RankedCandidate:
    """One candidate, its score (mean over batches and initialisations) and its size."""

    label: str
    student: StudentConfig
    score: float
    parameters: int


def _network(spec: StudentConfig, data: DataSplits) -> torch.nn.Module:
    return build_model(
        spec.model, input_shape=data.input_shape, num_classes=data.num_classes, **spec.options
    )


def rank_candidates(config: ClassificationConfig, data: DataSplits) -> list[RankedCandidate]:
    """Score every ``search.candidates`` entry; best first. Nothing is trained."""
    search = config.search
    generator = torch.Generator().manual_seed(search.seed)
    batches = []
    for _ in range(search.batches):
        picks = torch.randperm(len(data.train), generator=generator)[: search.batch_size]
        batches.append(default_collate([data.train[int(i)] for i in picks]))
    scores: dict[int, list[float]] = {i: [] for i in range(len(search.candidates))}
    for repeat in range(search.repeats):
        set_seed(search.seed + repeat)
        teacher = _network(config.teacher, data)  # randomly initialised, as in the paper
        teacher_signatures = [signature(teacher, b["inputs"], b["labels"]) for b in batches]
        for index, spec in enumerate(search.candidates):
            set_seed(search.seed + 1000 * (index + 1) + repeat)
            student = _network(spec, data)
            for batch, teacher_signature in zip(batches, teacher_signatures, strict=True):
                scores[index].append(
                    diswot_score(
                        signature(student, batch["inputs"], batch["labels"]), teacher_signature
                    )
                )
    ranked = [
        RankedCandidate(
            label=f"{spec.model} {spec.options}" if spec.options else spec.model,
            student=spec,
            score=sum(scores[i]) / len(scores[i]),
            parameters=sum(p.numel() for p in _network(spec, data).parameters()),
        )
        for i, spec in enumerate(search.candidates)
    ]
    return sorted(ranked, key=lambda r: r.score, reverse=True)
