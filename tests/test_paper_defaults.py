"""Methods at their papers' weighting: the four logit methods, the mixing protocol and the
warm-up that every method accepts, and the defaults changed to the authors' values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distil import losses
from distil.config import load_config
from distil.errors import ConfigError
from distil.methods import build_method
from distil.methods.base import apply_protocol
from distil.outputs import ModelOutputs
from distil.pipeline import run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods"


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(16, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = 2.0 * torch.randn(16, 7, generator=generator, dtype=torch.float64)
    labels = torch.randint(7, (16,), generator=generator)
    return student, teacher, labels


def method_loss(config: dict, batch, progress: float = 1.0):
    student, teacher, labels = batch
    method = build_method(config)
    loss = method.loss(
        ModelOutputs(logits=student), {"teacher": ModelOutputs(logits=teacher)}, {"labels": labels}
    )
    return apply_protocol(loss, method.config, progress)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # mdistiller's DKD: 1·CE + (α·TCKD + β·NCKD)·T², α 1, β 8, T 4
        ({"name": "dkd"}, lambda s, t, y, ce: ce + losses.dkd(s, t, labels=y, temperature=4.0, alpha=1.0, beta=8.0)),
        # DIST's CIFAR config: 1·CE + 2·DIST(β 1, γ 1, τ 4)
        ({"name": "dist"}, lambda s, t, y, ce: ce + 2 * losses.dist(s, t, temperature=4.0)),
        # logit standardisation: 0.1·CE + 9·KD on z-scored logits at T 2
        ({"name": "logit_std_kd"}, lambda s, t, y, ce: 0.1 * ce + 9 * losses.logit_std_kd(s, t, temperature=2.0)),
        # PLD alone, no CE, τ 4 (the paper's CIFAR-100 value)
        ({"name": "pld"}, lambda s, t, y, ce: losses.pld(s, t, labels=y, temperature=4.0)),
    ],
    ids=["dkd", "dist", "logit_std_kd", "pld"],
)  # fmt: skip
def test_logit_methods_are_their_papers_weighting(batch, config, expected):
    """Bug caught: the method still mixing (1 − α)·CE + α·D, a wrong default weight, or an
    option (β, γ, T) not reaching the loss."""
    student, teacher, labels = batch
    ce = F.cross_entropy(student, labels)
    total = method_loss(config, batch).total
    torch.testing.assert_close(total, expected(student, teacher, labels, ce))


def test_mixing_alpha_is_the_old_kd_protocol(batch):
    """``dkd`` under ``mixing_alpha: 0.9`` is exactly ``kd`` with ``divergence: dkd`` at
    α 0.9 — the benchmarks' former protocol stays one setting away. Bug caught: the label
    term or the teacher term scaled by the wrong factor."""
    mixed = method_loss({"name": "dkd", "mixing_alpha": 0.9, "warmup": 0.0}, batch)
    old = method_loss({"name": "kd", "divergence": "dkd", "alpha": 0.9, "beta": 8.0}, batch)
    torch.testing.assert_close(mixed.total, old.total)
    (grad_mixed,) = torch.autograd.grad(mixed.total, batch[0])
    (grad_old,) = torch.autograd.grad(old.total, batch[0])
    torch.testing.assert_close(grad_mixed, grad_old)


def test_mixing_alpha_keeps_a_feature_methods_own_weight():
    """(1 − α)·CE + α·β·hint for FitNet: the hint's own β stays. Bug caught: β dropped, or
    the label term scaled by α."""
    ce, hint = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    from distil.methods.base import LossOutput
    from distil.methods.fitnet import FitNetConfig

    config = FitNetConfig(student_layer="a", teacher_layer="b", mixing_alpha=0.8)
    loss = LossOutput.combine({"ce": (1.0, ce), "hint": (config.beta, hint)})
    mixed = apply_protocol(loss, config, progress=1.0)
    assert float(mixed.total) == pytest.approx(0.2 * 2.0 + 0.8 * 100.0 * 3.0)
    assert mixed.weights == pytest.approx({"ce": 0.2, "hint": 80.0})


def test_kd_refuses_a_second_alpha():
    with pytest.raises(ValueError, match="kd's alpha already is the α-mixing weight"):
        build_method({"name": "kd", "mixing_alpha": 0.5})


def test_warmup_ramps_the_teacher_terms_only(batch):
    """At a quarter of DKD's warm-up the DKD term carries a quarter of its weight and CE all
    of its. Bug caught: the ramp applied to CE, or inverted."""
    full = method_loss({"name": "dkd"}, batch)
    early = method_loss({"name": "dkd"}, batch, progress=(20 / 240) / 4)
    assert early.weights["ce"] == 1.0
    assert early.weights["kd"] == pytest.approx(0.25)
    torch.testing.assert_close(early.parts["kd"], full.parts["kd"])


def test_the_trainer_hands_the_warmup_its_progress(tiny_recipe):
    """With the warm-up spanning the whole run, the logged weight of the teacher term at step
    s is s / total_steps exactly. Bug caught: the loop not passing progress (weight 1 at
    every step), or progress off by one step."""
    config = load_config(
        tiny_recipe, ["method={name: dkd, warmup: 1.0}", "train.log_every=1", "train.epochs=1"]
    )
    result = run(config)
    rows = [
        json.loads(line)
        for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    total = rows[-1]["step"]
    for row in rows:
        ratio = row["loss/kd@weighted"] / row["loss/kd"]
        assert ratio == pytest.approx(row["step"] / total, rel=1e-5)


def test_fused_lm_terms_cannot_be_reweighted():
    """An LM head's fused CE + KD carries no gradient per part: refused, not silently wrong."""
    from distil.methods.base import LossOutput

    weight = torch.ones(3, requires_grad=True)
    total = (weight * 2).sum()
    fused = LossOutput(
        total, {"ce": torch.tensor(1.0), "kd": torch.tensor(2.0)}, {"ce": 0.5, "kd": 0.5}
    )
    config = build_method({"name": "dkd"}).config
    with pytest.raises(ConfigError, match="fused"):
        apply_protocol(fused, config, progress=0.01)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("fitnet", "beta", 100.0),
        ("at", "beta", 1000.0),
        ("crd", "negatives", 16384),
        ("crd", "negatives_from", "other_classes"),
        ("nd", "kd_weight", 3.5),
        ("nd", "nd_weight", 2.0),
        ("ofa", "label_smoothing", 0.1),
        ("dkd", "beta", 8.0),
        ("dist", "kd_weight", 2.0),
        ("dist", "beta", 1.0),
        ("logit_std_kd", "kd_weight", 9.0),
        ("pld", "ce_weight", 0.0),
        ("dkd", "warmup", 20 / 240),
        ("logit_std_kd", "temperature", 2.0),
    ],
)
def test_defaults_are_the_authors(name, field, value):
    """Each default the docs cite as the authors' is the one the Config carries."""
    from distil.methods import METHODS

    fields = METHODS.get(name).Config.model_fields
    assert fields[field].default == value


@pytest.mark.parametrize(
    "name",
    ["kd", "fitnet", "at", "rkd", "crd", "dkd", "dist", "ofa", "nd", "pld", "logit_std_kd"],
)
def test_every_reproduced_method_cites_its_defaults(name):
    """Every method in ``distil bench reproduce`` has a page with its defaults' sources and
    a statement of whether its paper's direction reproduced."""
    text = (DOCS / f"{name}.md").read_text()
    assert "## Defaults and their sources" in text
    assert "## Reproduction" in text


def test_attention_transfer_uses_its_exponent():
    """``p`` reaches the attention map (it used to be ignored: always 2). Bug caught: the
    method computing Q with p = 2 whatever the config says."""
    from distil.methods.attention import AttentionConfig, AttentionTransfer

    features = {"s": torch.rand(4, 3, 5, 5), "t": torch.rand(4, 6, 5, 5)}
    labels = torch.zeros(4, dtype=torch.long)

    def attention_part(p: float) -> float:
        method = AttentionTransfer(AttentionConfig(student_layers=["s"], teacher_layers=["t"], p=p))
        student = ModelOutputs(logits=torch.zeros(4, 2), features={"s": features["s"]})
        teacher = ModelOutputs(logits=torch.zeros(4, 2), features={"t": features["t"]})
        return float(
            method.loss(student, {"teacher": teacher}, {"labels": labels}).parts["attention"]
        )

    def by_hand(p: float) -> float:
        q = [F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1) for f in features.values()]
        return float((q[0] - q[1]).pow(2).mean())

    assert attention_part(4.0) == pytest.approx(by_hand(4.0), rel=1e-5)
    assert attention_part(4.0) != pytest.approx(attention_part(2.0), rel=1e-3)


def test_pld_softens_only_the_teacher():
    """PLD as the paper's code computes it, by brute force: the student's Plackett–Luce
    likelihood of π* on its *raw* logits, positions weighted by softmax(z_t / τ), no τ².
    Bug caught: the student's logits divided by τ or a τ² factor (the form this replaced:
    at τ = 4 it was 9× the paper's value)."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    teacher = 3 * torch.randn(5, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(6, (5,), generator=generator)
    tau = 4.0
    expected = []
    for s, t, y in zip(student, teacher, labels, strict=True):
        rest = sorted((c for c in range(6) if c != int(y)), key=lambda c: -float(t[c]))
        order = [int(y), *rest]
        weights = torch.softmax(t / tau, dim=0)
        value = 0.0
        for k, c in enumerate(order):
            remaining = torch.tensor([float(s[j]) for j in order[k:]], dtype=torch.float64)
            value += float(weights[c]) * (float(torch.logsumexp(remaining, 0)) - float(s[c]))
        expected.append(value)
    got = losses.pld(student, teacher, labels=labels, temperature=tau)
    assert float(got) == pytest.approx(sum(expected) / 5, rel=1e-10)


def test_ofa_has_no_temperature_squared():
    """−Σ_c [(p_t + y)^ε − y]·log q at T = 2, as the authors' code: no T² factor."""
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    teacher = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 4])
    one_hot = F.one_hot(labels, 5).double()
    weights = (torch.softmax(teacher / 2, -1) + one_hot).pow(1.5) - one_hot
    expected = -(weights * F.log_softmax(student / 2, -1)).sum(-1).mean()
    got = losses.get("ofa")(student, teacher, labels=labels, temperature=2.0, eps=1.5)
    torch.testing.assert_close(got, expected)


def crd_with(labels: torch.Tensor, negatives_from: str, negatives: int = 16384):
    from types import SimpleNamespace

    from distil.data.datasets import ArrayDataset
    from distil.methods.crd import CRD, CRDConfig

    method = CRD(CRDConfig(student_layer="s", teacher_layer="t", negatives=negatives,
                           negatives_from=negatives_from))  # fmt: skip
    context = SimpleNamespace(
        student_shapes={"s": (3,)}, teacher_shapes={"t": (3,)}, num_samples=len(labels),
        train_data=ArrayDataset(torch.zeros(len(labels), 3), labels),
    )  # fmt: skip
    method.setup(context)
    return method


def test_crd_draws_negatives_uniformly_from_the_other_classes():
    """As the official code: never the anchor's class, every other-class sample equally
    likely (χ² test), K capped by the other classes' samples. Bug caught: off-by-one in the
    mapping around the class block (a same-class sample drawn, or the last sample never),
    or same-class negatives kept."""
    from scipy.stats import chisquare

    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 3, 3])
    method = crd_with(labels, "other_classes")
    assert method.k == 10 - 3  # the largest class has 3 samples
    torch.manual_seed(0)
    for anchor in range(10):
        drawn = method._negatives(torch.full((3000,), anchor)).flatten()
        assert not (labels[drawn] == labels[anchor]).any()
        allowed = (labels != labels[anchor]).nonzero().flatten()
        counts = torch.bincount(drawn, minlength=10)[allowed]
        assert counts.sum() == drawn.numel()
        assert chisquare(counts.numpy()).pvalue > 1e-4
    everywhere = crd_with(labels, "all")
    drawn = everywhere._negatives(torch.full((2000,), 0)).flatten()
    assert (labels[drawn] == 0).any() and everywhere.k == 9
