"""Privacy: the canary-exposure measure against independent references, and Swing
distillation's loss against a token-by-token reference written here in plain torch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from distil.errors import ConfigError
from distil.eval.privacy import (
    Canary,
    exposure,
    make_canaries,
    rank_of,
    sequence_log_likelihoods,
)
from distil.losses import TopK
from distil.methods import build_method
from distil.methods.base import SetupContext
from distil.methods.kd import KD
from distil.methods.swing import noisy_targets, sensitive_vocabulary, token_noise
from distil.models.causal_lm import tiny_causal_lm
from distil.models.language_model import LanguageModel
from distil.outputs import ModelOutputs

# --- exposure -----------------------------------------------------------------------------


def test_rank_counts_strictly_better_candidates_like_scipy_min_rank():
    """Bug caught: sorting and taking the position (ties broken arbitrarily), ranking the
    worst as 1 (descending vs ascending), or an off-by-one in the count."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 40, (500,), generator=generator).double()  # many ties
    reference = rankdata(-scores.numpy(), method="min")
    for index in range(0, 500, 7):
        assert rank_of(scores, index) == int(reference[index])


def test_exposure_closed_forms():
    """Bug caught: log base e or 10, or log2(rank) added instead of subtracted."""
    scores = torch.arange(1024, dtype=torch.float64)  # candidate 1023 is the most likely
    assert exposure(scores, 1023) == pytest.approx(10.0)  # rank 1 of 2^10
    assert exposure(scores, 0) == pytest.approx(0.0)  # the least likely: rank N
    assert exposure(scores, 511) == pytest.approx(10 - math.log2(513))


def test_canaries_and_their_candidates():
    """Bug caught: secrets that repeat, a candidate list not in numeric order (the secret's
    index would point at another sentence), or unpadded secrets ('7' for '0007')."""
    canaries = make_canaries(
        [f"pin {chr(97 + i % 26)}{i // 26} is " for i in range(50)], digits=3, seed=1
    )
    assert len({c.secret for c in canaries}) == 50
    for canary in canaries[:5]:
        candidates = canary.candidates()
        assert len(candidates) == 1000 and len(canary.secret) == 3
        assert candidates[canary.secret_index] == canary.text
    assert Canary("x ", "0007").candidates()[7] == "x 0007"


class _CharTokenizer:
    """One token per character of a small alphabet (an independent, trivially exact one)."""

    alphabet = "abcdefghij0123456789 "

    def __len__(self) -> int:
        return len(self.alphabet)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [self.alphabet.index(ch) for ch in text]}

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i] for i in ids)


def _full_log_likelihood(model, tokenizer, text: str) -> float:
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        logprobs = F.log_softmax(model({"input_ids": ids}).double(), dim=-1)[0]
    return sum(float(logprobs[t - 1, ids[0, t]]) for t in range(1, ids.shape[1]))


@pytest.mark.parametrize("texts", [["ab 12", "ab 3", "ab 456", "ab 1"], ["ab", "j 0", "ij0"]])
def test_sequence_scores_rank_like_full_log_likelihoods(texts):
    """Differences between scores equal differences of log p(text) computed one text at a
    time (the shared prefix's probability is the same for all). Bugs caught: padding scored
    as tokens, the shift off by one (token t scored with the logits of t), the shared
    prefix's length miscounted (a differing token left out)."""
    tokenizer = _CharTokenizer()
    model = LanguageModel(tiny_causal_lm(len(tokenizer), 16, 1, 2, seed=0), len(tokenizer))
    scores = sequence_log_likelihoods(model, tokenizer, texts, batch_size=3)
    full = [_full_log_likelihood(model, tokenizer, text) for text in texts]
    for i in range(1, len(texts)):
        assert float(scores[i] - scores[0]) == pytest.approx(full[i] - full[0], abs=1e-4)
    if texts[0][0] != texts[1][0]:  # nothing shared: the scores are log p(text) itself
        assert [float(v) for v in scores] == pytest.approx(full, abs=1e-4)


# --- Swing distillation -------------------------------------------------------------------

VOCAB, HIDDEN = 21, 8


def _swing(**options):
    method = build_method({"name": "swing", **options})
    table = torch.zeros(VOCAB, dtype=torch.bool)
    table[10:20] = True  # the digits of _CharTokenizer
    method.sensitive = table
    return method


def _batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, VOCAB, (3, 6), generator=generator)
    labels[0, :2] = -100  # a prompt / padding
    hidden = torch.randn(3, 6, HIDDEN, generator=generator, dtype=torch.float64)
    head = torch.randn(VOCAB, HIDDEN, generator=generator, dtype=torch.float64)
    teacher = 3 * torch.randn(3, 6, VOCAB, generator=generator, dtype=torch.float64)
    return labels, hidden.requires_grad_(), head.requires_grad_(), teacher


def _reference(hidden, head, teacher, labels, sensitive, *, alpha, tau, tau_s):
    """Token by token: (1−α)CE + ατ²KL at τ where not sensitive; ατ_s²KL at τ_s where
    sensitive (no CE); the mean over labelled tokens."""
    logits = hidden @ head.T
    values = []
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y < 0:
                continue
            temperature = tau_s if sensitive[y] else tau
            p = F.softmax(teacher[b, t] / temperature, -1)
            log_q = F.log_softmax(logits[b, t] / temperature, -1)
            kl = (p * (p.log() - log_q)).sum() * temperature**2
            if sensitive[y]:
                values.append(alpha * kl)
            else:
                ce = -F.log_softmax(logits[b, t], -1)[y]
                values.append((1 - alpha) * ce + alpha * kl)
    return torch.stack(values).mean()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_swing_loss_matches_a_token_by_token_reference(fused, sigma):
    """Bugs caught: CE left on the sensitive tokens, the sensitive tokens at τ instead of τ_s,
    the two groups averaged with equal weight instead of by their token counts, the mask of
    prompt tokens (−100) dropped, the T² factor missing on one group, the noise not scaled
    by τ_s (σ would not be in units of the tempered logits) or put on every position."""
    tau, tau_s = 2.0, 7.0
    method = _swing(
        alpha=0.3, temperature=tau, sensitive_temperature=tau_s, noise_std=sigma, seed=5
    )
    labels, hidden, head, teacher = _batch()
    sensitive = method.sensitive[labels.clamp_min(0)] & (labels >= 0)
    assert 0 < int(sensitive.sum()) < int((labels >= 0).sum())
    student = (
        ModelOutputs(logits=None, hidden=hidden, head=head, vocab_size=VOCAB)
        if fused
        else ModelOutputs(logits=hidden @ head.T)
    )
    index = torch.tensor([4, 0, 9])
    batch = {"labels": labels, "index": index}
    loss = method.loss(student, {"teacher": ModelOutputs(logits=teacher)}, batch)
    noise = token_noise(index, labels.shape[1], VOCAB, seed=5).double()
    noisy_teacher = teacher + tau_s * sigma * noise * sensitive[..., None]
    expected = _reference(
        hidden, head, noisy_teacher, labels, method.sensitive, alpha=0.3, tau=tau, tau_s=tau_s
    )
    assert float(loss.total) == pytest.approx(float(expected), rel=1e-5)
    weighted = sum(loss.weights[name] * loss.parts[name] for name in loss.parts)
    assert float(weighted) == pytest.approx(float(loss.total), rel=1e-6)
    grads = torch.autograd.grad(loss.total, (hidden, head))
    expected_grads = torch.autograd.grad(expected, (hidden, head))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_swing_without_sensitive_tokens_is_kd():
    """Bug caught: swing changing the loss where the detector flags nothing (e.g. the share
    weights wrong, or the noise applied everywhere)."""
    method = _swing(alpha=0.4, temperature=1.5, noise_std=3.0)
    labels, hidden, head, teacher = _batch(seed=3)
    labels = labels.where(~method.sensitive[labels.clamp_min(0)], 0)  # no digit targets
    student = ModelOutputs(logits=None, hidden=hidden, head=head, vocab_size=VOCAB)
    teachers = {"teacher": ModelOutputs(logits=teacher)}
    batch = {"labels": labels, "index": torch.tensor([0, 1, 2])}
    swing = method.loss(student, teachers, batch).total
    kd = KD(KD.Config(alpha=0.4, temperature=1.5)).loss(student, teachers, batch).total
    assert float(swing) == pytest.approx(float(kd), rel=1e-6)


def test_noise_is_sigma_on_the_tempered_logits_at_sensitive_positions_only():
    """Bugs caught: noise not scaled by τ_s (σ would shrink with the temperature), noise on
    the non-sensitive positions, a top-k teacher's noise on its indices."""
    tau_s, sigma = 8.0, 0.5
    teacher = torch.randn(4, 50, 300)
    sensitive = torch.zeros(4, 50, dtype=torch.bool)
    sensitive[:, ::2] = True
    noise = token_noise(torch.arange(4), 50, 300, seed=0)
    noisy = noisy_targets(teacher, sensitive, noise, tau_s * sigma)
    change = (noisy - teacher) / tau_s
    assert float(change[sensitive].std()) == pytest.approx(sigma, rel=0.02)
    assert float(change[~sensitive].abs().max()) == 0.0
    top = TopK.from_logits(teacher, 5)
    noisy_top = noisy_targets(top, sensitive, noise, tau_s * sigma)
    assert torch.equal(noisy_top.indices, top.indices)
    assert float(((noisy_top.logprobs - top.logprobs) / tau_s)[sensitive].std()) == (
        pytest.approx(sigma, rel=0.1)
    )


def test_noise_is_fixed_per_sample_and_differs_between_samples():
    """Bug caught: fresh noise every step (repetition would average it away) or one noise
    pattern shared by every sample."""
    first = token_noise(torch.tensor([3, 9]), 4, 10, seed=1)
    again = token_noise(torch.tensor([9, 3]), 4, 10, seed=1)
    assert torch.equal(first[0], again[1]) and torch.equal(first[1], again[0])
    assert not torch.allclose(first[0], first[1])
    assert not torch.equal(first, token_noise(torch.tensor([3, 9]), 4, 10, seed=2))


def test_detector_table_and_its_errors():
    """Bug caught: the table built from token ids instead of their text, a pattern that
    matches nothing accepted (swing silently equal to KD), a classification run accepted."""
    tokenizer = _CharTokenizer()
    table = sensitive_vocabulary(tokenizer, r"\d")
    assert table.tolist() == [ch.isdigit() for ch in tokenizer.alphabet]

    class _Data:
        pass

    def setup(data, pattern=r"\d"):
        method = build_method({"name": "swing", "sensitive_pattern": pattern})
        context = SetupContext(
            student=torch.nn.Linear(1, 1), teachers={}, train_data=[], data=data,
            forward=lambda model, batch: None,
        )  # fmt: skip
        method.setup(context)
        return method

    lm_data = _Data()
    lm_data.tokenizer = tokenizer
    assert setup(lm_data).sensitive.tolist() == table.tolist()
    with pytest.raises(ConfigError, match="matches no token"):
        setup(lm_data, pattern="@@")
    with pytest.raises(ConfigError, match="task: lm"):
        setup(_Data())
    with pytest.raises(Exception, match="regular expression"):
        build_method({"name": "swing", "sensitive_pattern": "("})


def test_the_privacy_page_quotes_the_committed_results():
    """docs/privacy.md's tables are `distil bench privacy --show --pivot …` of the committed
    JSON, from a full run (three student seeds, every canary in every model). Bug caught: a
    number typed or edited by hand, or quick results committed."""
    import json
    from pathlib import Path

    from distil.bench import load_results, pivot_table

    root = Path(__file__).resolve().parents[2]
    rows = load_results("privacy", root / "benchmarks" / "results")
    page = (root / "docs" / "privacy.md").read_text(encoding="utf-8")
    assert pivot_table(rows, "exposure") in page
    assert pivot_table(rows, "perplexity") in page
    assert pivot_table(rows, "exposure") in (root / "README.md").read_text(encoding="utf-8")
    payload = json.loads((root / "benchmarks" / "results" / "privacy.json").read_text())
    assert not payload["quick"]
    students = {(r["method"], r["seed"]) for r in rows if r["method"] != "teacher"}
    assert students == {(m, s) for m in ("kd", "swing") for s in (0, 1, 2)}
