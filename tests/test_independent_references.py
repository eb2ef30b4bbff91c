"""Our classification-KD terms against implementations we did not write.

Two kinds of reference, both independent of ``distil``:

* torchdistill 1.1.5 (``torchdistill.losses.mid_level``), imported and run live on tensors
  we build here (its modules read ``io_dict[module_path][io]``, so the dicts are built by
  hand);
* the papers' authors' code (mdistiller for DKD, hunto's DIST, Sun et al.'s logit
  standardisation, Zagoruyko's AT, Park et al.'s RKD, Tian et al.'s RepDistiller for CRD and
  FitNet), run once, unmodified, on seeded float64 inputs outside this repository; inputs and
  outputs are stored in ``tests/fixtures/references/*.json`` with repo, commit, path and
  function. No reference code is imported from the repository.

Where our definition differs from a reference by a documented convention the docstring
states the conversion. ``docs/references.md`` summarises what is compared and what is not.
Our feature losses cast their inputs to float32 (``.float()``), so those comparisons use
float32 tolerances even on float64 inputs; the logit losses keep float64 and compare tightly.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.losses import divergences, logit_kd
from distil.losses.features import (
    attention_map,
    attention_transfer_loss,
    hint_loss,
    rkd_angle_loss,
    rkd_distance_loss,
)
from distil.methods import build_method
from distil.methods.base import SetupContext
from distil.outputs import ModelOutputs

mid_level = pytest.importorskip("torchdistill.losses.mid_level")

FIXTURES = Path(__file__).parent / "fixtures" / "references"
F64 = torch.float64
#: float64 end to end (the logit losses): only summation order differs.
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
#: our feature losses compute in float32 whatever the input dtype.
FLOAT32 = {"rtol": 2e-5, "atol": 1e-6}


@cache
def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def cases(name: str) -> list[dict[str, Any]]:
    return fixture(name)["cases"]


def tensor(values: Any) -> Tensor:
    return torch.tensor(values, dtype=F64)


def value_and_grad(loss_of: Any, student: Tensor) -> tuple[Tensor, Tensor]:
    """The loss on a fresh float64 leaf copy of ``student`` and its gradient wrt it."""
    leaf = student.detach().clone().requires_grad_(True)
    value = loss_of(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach().double(), grad


def assert_close(actual: Tensor, expected: Any, tolerance: dict[str, float], what: str) -> None:
    expected_tensor = expected if isinstance(expected, Tensor) else tensor(expected)
    torch.testing.assert_close(
        actual.double(), expected_tensor.double(), **tolerance, msg=lambda m: f"{what}: {m}"
    )


def io(path: str, **entries: Any) -> dict[str, dict[str, Any]]:
    """A torchdistill io_dict: ``{module_path: {'input' | 'output': value}}``."""
    return {path: entries}


def random_logits(seed: int, n: int, c: int, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g, dtype=F64) * scale,
            torch.randn(n, c, generator=g, dtype=F64) * scale)  # fmt: skip


# ------------------------------------------------------------------------------- logit terms


@pytest.mark.parametrize("case", cases("dkd"), ids=lambda c: f"seed{c['seed']}")
def test_dkd_matches_mdistiller_dkd_loss(case: dict[str, Any]) -> None:
    """mdistiller's ``dkd_loss`` (the DKD authors' code): T²·(α·TCKD + β·NCKD)/N, no
    conversion. Catches a swapped KL direction, a missing T², α/β on the wrong part, a
    non-target distribution not renormalised without the target class, the target's mass
    left in the "rest" bucket."""
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    labels = torch.tensor(case["labels"])
    options = {k: case[k] for k in ("temperature", "alpha", "beta")}
    value, grad = value_and_grad(
        lambda s: logit_kd.dkd(s, teacher, labels=labels, **options), student
    )
    assert_close(value, case["loss"], TIGHT, "dkd value")
    assert_close(grad, case["grad_student"], TIGHT, "dkd gradient")


def test_dkd_of_a_sequence_is_the_reference_on_its_rows() -> None:
    """(B, T, C) logits are rows of one batch: batchmean over B·T rows, as the reference's
    division by the row count. Catches a mean over B only or labels misaligned with rows."""
    case = cases("dkd")[0]
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    labels = torch.tensor(case["labels"])
    options = {k: case[k] for k in ("temperature", "alpha", "beta")}
    value = logit_kd.dkd(
        student.reshape(2, 4, -1), teacher.reshape(2, 4, -1), labels=labels.reshape(2, 4),
        **options,
    )  # fmt: skip
    assert_close(value, case["loss"], TIGHT, "dkd (B, T, C)")


@pytest.mark.parametrize("case", cases("dist"), ids=lambda c: f"seed{c['seed']}")
def test_dist_matches_the_authors_dist(case: dict[str, Any]) -> None:
    """hunto's ``DIST(beta, gamma, tau)`` (the DIST authors' code). Its Pearson divides by
    ‖a‖·‖b‖ + 1e-8 where ours clamps the product at 1e-12: with that ε set to 0 (the fixture's
    ``*_eps0``) the two agree to float64 rounding; with the authors' ε they differ by up to
    1e-8/(‖a‖·‖b‖) per correlation — 5e-7 relative on the loss of the (6, 100), τ = 4 case,
    whose rarest class has a column-norm product of 2e-5. Catches the inter/intra terms
    swapped with β/γ, centring along the wrong axis, a missing τ², softmax without τ."""
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    options = {"temperature": case["tau"], "beta": case["beta"], "gamma": case["gamma"]}
    value, grad = value_and_grad(lambda s: logit_kd.dist(s, teacher, **options), student)
    assert_close(value, case["loss_eps0"], TIGHT, "dist value (authors' code, eps 0)")
    assert_close(grad, case["grad_student_eps0"], TIGHT, "dist gradient (authors' code, eps 0)")
    assert_close(value, case["loss"], {"rtol": 1e-6, "atol": 0.0}, "dist value (authors' eps)")


@pytest.mark.parametrize(("n", "c", "tau", "beta", "gamma"), [
    (8, 10, 1.0, 1.0, 1.0), (32, 100, 4.0, 2.0, 1.0), (5, 3, 2.0, 0.5, 3.0),
])  # fmt: skip
def test_dist_matches_torchdistill(n: int, c: int, tau: float, beta: float, gamma: float) -> None:
    """torchdistill's ``DISTLoss`` (cosine_similarity with eps 1e-8 on each norm), no
    conversion. Same bugs as above, against a second implementation."""
    student, teacher = random_logits(n * c, n, c, scale=2.0)
    reference = mid_level.DISTLoss(".", "output", ".", "output", beta=beta, gamma=gamma, tau=tau)
    expected, expected_grad = value_and_grad(
        lambda s: reference(io(".", output=s), io(".", output=teacher)), student
    )
    options = {"temperature": tau, "beta": beta, "gamma": gamma}
    value, grad = value_and_grad(lambda s: logit_kd.dist(s, teacher, **options), student)
    assert_close(value, expected, {"rtol": 1e-6, "atol": 1e-9}, "dist value")
    assert_close(grad, expected_grad, {"rtol": 1e-5, "atol": 1e-9}, "dist gradient")


@pytest.mark.parametrize("case", cases("logit_std_kd"), ids=lambda c: f"seed{c['seed']}")
def test_logit_std_kd_matches_the_authors_kd_loss(case: dict[str, Any]) -> None:
    """Sun et al.'s ``kd_loss(..., logit_stand=True)``: T²·KL on z-scored logits (Bessel std,
    +1e-7), no conversion. Catches a population std, ε inside the sqrt, standardising one
    side only, a missing T²."""
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    temperature = case["temperature"]
    value, grad = value_and_grad(
        lambda s: logit_kd.logit_std_kd(s, teacher, temperature=temperature), student
    )
    assert_close(value, case["loss"], TIGHT, "logit_std_kd value")
    assert_close(grad, case["grad_student"], TIGHT, "logit_std_kd gradient")


@pytest.mark.parametrize(
    ("reference_class", "ours", "n", "c", "temperature"),
    [
        *[("LogitStdKDLoss", logit_kd.logit_std_kd, *shape) for shape in [(8, 10, 2.0), (16, 100, 4.0), (3, 4, 1.0)]],
        *[("KDLoss", divergences.forward_kl, *shape) for shape in [(8, 10, 4.0), (16, 100, 1.0), (4, 3, 20.0)]],
    ],
)  # fmt: skip
def test_kd_terms_match_torchdistill(
    reference_class, ours, n: int, c: int, temperature: float
) -> None:
    """torchdistill's ``KDLoss`` and ``LogitStdKDLoss`` with α = 0.3 are 0.3·CE + 0.7·T²·KL
    (on z-scored logits for the latter), so 0.3·CE + 0.7·ours — T² belongs to the term, as in
    ours. Catches KL(q ‖ p), a missing T², a population std, an unstandardised teacher."""
    student, teacher = random_logits((7 if ours is logit_kd.logit_std_kd else 3) * n + c, n, c,
                                     scale=3.0 if ours is logit_kd.logit_std_kd else 2.0)  # fmt: skip
    labels = torch.arange(n) % c
    reference = getattr(mid_level, reference_class)(
        ".", "output", ".", "output", temperature=temperature, alpha=0.3
    )
    expected, expected_grad = value_and_grad(
        lambda s: reference(io(".", output=s), io(".", output=teacher), labels), student
    )
    value, grad = value_and_grad(
        lambda s: (
            0.3 * F.cross_entropy(s, labels) + 0.7 * ours(s, teacher, temperature=temperature)
        ),
        student,
    )
    assert_close(value, expected, TIGHT, f"{ours.__name__} value")
    assert_close(grad, expected_grad, TIGHT, f"{ours.__name__} gradient")


@pytest.mark.parametrize("case", cases("kd"), ids=lambda c: f"seed{c['seed']}")
def test_forward_kl_matches_mdistiller_kd_loss(case: dict[str, Any]) -> None:
    """mdistiller's ``kd_loss``: T²·mean_i KL(p_i ‖ q_i), no conversion. Catches
    KL(q ‖ p), a mean over classes instead of samples, a missing T²."""
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    temperature = case["temperature"]
    value, grad = value_and_grad(
        lambda s: divergences.forward_kl(s, teacher, temperature=temperature), student
    )
    assert_close(value, case["loss"], TIGHT, "forward_kl value")
    assert_close(grad, case["grad_student"], TIGHT, "forward_kl gradient")


# ------------------------------------------------------------------------------ feature terms


@pytest.mark.parametrize("case", cases("fitnet"), ids=lambda c: f"seed{c['seed']}")
def test_hint_loss_matches_repdistiller_hintloss(case: dict[str, Any]) -> None:
    """RepDistiller's ``HintLoss`` (nn.MSELoss, mean over every element), no conversion.
    Catches a sum, a per-sample mean, a squared norm without the mean."""
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    value, grad = value_and_grad(lambda s: hint_loss(s, teacher), student)
    assert_close(value, case["loss"], FLOAT32, "hint value")
    assert_close(grad, case["grad_student"], FLOAT32, "hint gradient")


def _setup_context(student_shapes: dict, teacher_shapes: dict, samples: int = 8) -> SetupContext:
    return SetupContext(
        student=nn.Identity(), teachers={"teacher": None}, train_data=list(range(samples)),
        data=None, forward=lambda model, batch: None, student_shapes=student_shapes,
        teacher_shapes=teacher_shapes,
    )  # fmt: skip


def test_fitnet_method_is_ce_plus_beta_hint_as_mdistiller() -> None:
    """mdistiller's FitNet: CE_WEIGHT·CE + FEAT_WEIGHT·MSE(r(F_s), F_t) with 1 and 100; ours
    is CE + β·hint with β = 100 by default, mdistiller's and RepDistiller's weight. With an
    identity regressor the total is checked against torch's CE plus the RepDistiller
    fixture's MSE. Catches β on the CE, another default weight, a detached student feature."""
    case = cases("fitnet")[0]
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    shape = tuple(student.shape[1:])
    method = build_method({"name": "fitnet", "student_layer": "s", "teacher_layer": "t",
                           "projector": "identity"})  # fmt: skip
    method.bind(_setup_context({"s": shape}, {"t": shape}))
    logits = torch.randn(len(student), 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    labels = torch.arange(len(student)) % 5
    leaf = student.clone().requires_grad_(True)
    out = method.loss(
        ModelOutputs(logits, {"s": leaf}), {"teacher": ModelOutputs(None, {"t": teacher})},
        {"labels": labels},
    )  # fmt: skip
    assert out.weights["hint"] == 100.0
    expected = F.cross_entropy(logits, labels) + 100.0 * case["loss"]
    assert_close(out.total.detach(), expected, FLOAT32, "fitnet total")
    (grad,) = torch.autograd.grad(out.total, leaf)
    assert_close(grad, 100.0 * tensor(case["grad_student"]), FLOAT32, "fitnet gradient")


@pytest.mark.parametrize("case", cases("at"), ids=lambda c: f"seed{c['seed']}")
@pytest.mark.parametrize("p", [2, 4])
def test_attention_loss_matches_the_authors_at_loss(case: dict[str, Any], p: int) -> None:
    """Zagoruyko's ``utils.at_loss`` (p = 2) and RepDistiller's ``Attention(p=4).at_loss``:
    mean((normalise(mean_c F^p) − …)²), no conversion (|F|^p = F^p for even p). Catches a
    missing L2 normalisation, p not reaching the energy, normalising over the batch or the
    channels, a sum instead of the mean. (A sum over channels instead of their mean is a
    constant factor that the normalisation removes: not a bug, and not detectable.)"""
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    value, grad = value_and_grad(
        lambda s: attention_transfer_loss(attention_map(s, p=p), attention_map(teacher, p=p)),
        student,
    )
    assert_close(value, case[f"loss_p{p}"], FLOAT32, f"at value p={p}")
    assert_close(grad, case[f"grad_student_p{p}"], FLOAT32, f"at gradient p={p}")


def _at_loss(method: Any, students: dict[str, Tensor], teachers: dict[str, Tensor]) -> Any:
    n = len(next(iter(students.values())))
    return method.loss(ModelOutputs(torch.zeros(n, 2, dtype=F64), students),
                       {"teacher": ModelOutputs(None, teachers)},
                       {"labels": torch.zeros(n, dtype=torch.long)})  # fmt: skip


def test_at_method_matches_torchdistill_atloss() -> None:
    """torchdistill's ``ATLoss`` (mode 'code', weight 1 per pair) is Σ_pairs mean((Q_s −
    Q_t)²); our ``attention`` part equals it, weighted by β = 1000 by default as in the
    authors' cifar.py, RepDistiller and mdistiller (the paper's equation writes β/2; the
    code applies β). Catches pairs mismatched, a mean over pairs instead of the sum, β/2, the
    pooling path entered for equal sizes, a detached student."""
    g = torch.Generator().manual_seed(7)
    s1, t1 = torch.randn(4, 3, 6, 6, generator=g), torch.randn(4, 8, 6, 6, generator=g)
    s2, t2 = torch.randn(4, 5, 3, 2, generator=g), torch.randn(4, 2, 3, 2, generator=g)
    pairs = {f"pair{k}": {"student": {"io": "output", "path": f"s{k}"},
                          "teacher": {"io": "output", "path": f"t{k}"}, "weight": 1}
             for k in (1, 2)}  # fmt: skip
    s1 = s1.requires_grad_(True)
    expected = mid_level.ATLoss(pairs, mode="code")(
        {"s1": {"output": s1}, "s2": {"output": s2}}, {"t1": {"output": t1}, "t2": {"output": t2}}
    )
    (expected_grad,) = torch.autograd.grad(expected, s1)
    method = build_method({"name": "at", "student_layers": ["s1", "s2"],
                           "teacher_layers": ["t1", "t2"]})  # fmt: skip
    out = _at_loss(method, {"s1": s1, "s2": s2}, {"t1": t1, "t2": t2})
    assert out.weights["attention"] == 1000.0
    assert_close(out.parts["attention"].detach(), expected.detach(), FLOAT32, "at part")
    (grad,) = torch.autograd.grad(out.parts["attention"], s1)
    assert_close(grad, expected_grad, FLOAT32, "at gradient")


def test_at_method_uses_its_configured_p() -> None:
    """RepDistiller's ``Attention(p=4).at_loss`` on one pair: the method's ``attention`` part
    with p = 4 equals it. Catches a configured p that never reaches the attention map."""
    case = cases("at")[0]
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    method = build_method({"name": "at", "student_layers": ["s"], "teacher_layers": ["t"],
                           "p": 4.0})  # fmt: skip
    out = _at_loss(method, {"s": student}, {"t": teacher})
    assert_close(out.parts["attention"], case["loss_p4"], FLOAT32, "at part, p = 4")


@pytest.mark.parametrize("case", cases("rkd"), ids=lambda c: f"seed{c['seed']}")
def test_rkd_matches_the_authors_rkd_losses(case: dict[str, Any]) -> None:
    """Park et al.'s ``RkdDistance`` / ``RKdAngle`` (lenscloth/RKD), no conversion: distances
    divided by the mean of the N(N−1) off-diagonal ones, then the Huber loss averaged over
    all N² entries (the N zero diagonal entries included); the angle Huber over all N³
    triplets. Catches distances not divided by their mean, the teacher's mean used for the
    student, squared distances, a mean over the off-diagonal pairs only (×N/(N−1)), triplets
    built on the wrong axis, Huber's β ≠ 1."""
    student, teacher = tensor(case["student"]), tensor(case["teacher"])
    value, grad = value_and_grad(lambda s: rkd_distance_loss(s, teacher), student)
    assert_close(value, case["distance"], FLOAT32, "rkd distance value")
    assert_close(grad, case["grad_student_distance"], FLOAT32, "rkd distance gradient")
    value, grad = value_and_grad(lambda s: rkd_angle_loss(s, teacher), student)
    assert_close(value, case["angle"], FLOAT32, "rkd angle value")
    assert_close(grad, case["grad_student_angle"], FLOAT32, "rkd angle gradient")


@pytest.mark.parametrize(("n", "d_s", "d_t"), [(8, 4, 12), (32, 16, 16)])
def test_rkd_method_matches_torchdistill_rkdloss(n: int, d_s: int, d_t: int) -> None:
    """torchdistill's ``RKDLoss`` (factors 1/0 and 0/1, reduction 'mean') against the RKD
    method's parts, no conversion; the method's weights are the paper's and mdistiller's 25
    and 50; (N, C, 1, 1) features are flattened as both do. Catches a method that feeds the
    wrong layer or weights the parts the other way round."""
    g = torch.Generator().manual_seed(n + d_s)
    student = torch.randn(n, d_s, 1, 1, generator=g, dtype=F64)
    teacher = torch.randn(n, d_t, generator=g, dtype=F64) * 2.0
    method = build_method({"name": "rkd", "student_layer": "s", "teacher_layer": "t"})
    out = method.loss(ModelOutputs(torch.zeros(n, 2, dtype=F64), {"s": student}),
                      {"teacher": ModelOutputs(None, {"t": teacher})},
                      {"labels": torch.zeros(n, dtype=torch.long)})  # fmt: skip
    assert (out.weights["distance"], out.weights["angle"]) == (25.0, 50.0)
    for part, factors in (("distance", (1.0, 0.0)), ("angle", (0.0, 1.0))):
        reference = mid_level.RKDLoss("s", "t", *factors, reduction="mean")
        expected = reference({"s": {"output": student}}, {"t": {"output": teacher}})
        assert_close(out.parts[part], expected, FLOAT32, f"rkd {part}")


# ------------------------------------------------------------------------------------------ CRD


class _Split:
    """A training split that only tells its size and its labels (all CRD's setup reads)."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)


def _crd_method(momentum: float | None = None) -> tuple[Any, dict[str, Any]]:
    """Our CRD set up like the RepDistiller fixture: same heads, banks, sizes, float64."""
    data = fixture("crd")
    settings, initial = data["settings"], data["initial"]
    method = build_method({
        "name": "crd", "student_layer": "s", "teacher_layer": "t",
        "feature_dim": settings["feat_dim"], "negatives": settings["nce_k"],
        "temperature": settings["nce_t"],
        "momentum": settings["nce_m"] if momentum is None else momentum,
    })  # fmt: skip
    context = _setup_context({"s": (settings["s_dim"],)}, {"t": (settings["t_dim"],)})
    labels = [i % 3 for i in range(settings["n_data"])]  # 8 other-class samples ≥ K = 5
    method.bind(replace(context, train_data=_Split(labels)))
    assert method.k == settings["nce_k"]
    method.double()
    with torch.no_grad():
        method.embed_student.linear.weight.copy_(tensor(initial["embed_s_weight"]))
        method.embed_student.linear.bias.copy_(tensor(initial["embed_s_bias"]))
        method.embed_teacher.linear.weight.copy_(tensor(initial["embed_t_weight"]))
        method.embed_teacher.linear.bias.copy_(tensor(initial["embed_t_bias"]))
        method.student_bank.copy_(tensor(initial["memory_v1"]))
        method.teacher_bank.copy_(tensor(initial["memory_v2"]))
    return method, data


def test_crd_matches_repdistiller_over_two_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """RepDistiller's ``CRDLoss`` (Embed heads → ContrastMemory → two ContrastLoss), the CRD
    authors' code, on the same features, heads, banks and sampled indices, for two steps:
    the ``contrast`` part, the normalisers Z (set on step 1, fixed on step 2), both banks
    after each momentum update, and the gradients wrt the student feature and both heads'
    weights. The negatives are the fixture's (our sampler is replaced by them: how they are
    drawn is not compared); β = 0.8 is mdistiller's FEAT_WEIGHT. Catches a bank paired with
    the wrong anchor, noise ≠ K/N, Z recomputed each step, banks updated before scoring or
    with the other side's embedding, momentum on the wrong term, the positive not first."""
    method, data = _crd_method()
    for step, case in enumerate(data["cases"]):
        negatives = torch.tensor(case["contrast_idx"])[:, 1:]
        monkeypatch.setattr(method, "_negatives", lambda index, drawn=negatives: drawn.clone())
        f_s = tensor(case["f_s"]).requires_grad_(True)
        method.zero_grad()
        out = method.loss(
            ModelOutputs(torch.zeros(len(f_s), 3, dtype=F64), {"s": f_s}),
            {"teacher": ModelOutputs(None, {"t": tensor(case["f_t"])})},
            {"index": torch.tensor(case["idx"]), "labels": torch.zeros(len(f_s), dtype=torch.long)},
        )  # fmt: skip
        out.parts["contrast"].backward()
        where = f"crd step {step + 1}"
        assert out.weights["contrast"] == 0.8
        assert_close(out.parts["contrast"].detach(), case["loss"], TIGHT, f"{where} loss")
        assert_close(method.normalisers, [case["z_v1"], case["z_v2"]], TIGHT, f"{where} Z")
        assert_close(method.student_bank, case["memory_v1_after"], TIGHT, f"{where} student bank")
        assert_close(method.teacher_bank, case["memory_v2_after"], TIGHT, f"{where} teacher bank")
        assert_close(f_s.grad, case["grad_f_s"], TIGHT, f"{where} grad f_s")
        assert_close(method.embed_student.linear.weight.grad, case["grad_embed_s_weight"],
                     TIGHT, f"{where} grad student head")  # fmt: skip
        assert_close(method.embed_teacher.linear.weight.grad, case["grad_embed_t_weight"],
                     TIGHT, f"{where} grad teacher head")  # fmt: skip


def test_crd_contrast_matches_torchdistill_crdloss() -> None:
    """torchdistill's ``CRDLoss`` (contrast memory + NCE on given embeddings and indices),
    one step with momentum 0.3 (the fixture's 0.5 is symmetric in m and 1 − m): our
    ``_scores`` + ``nce_loss`` + ``_update`` on the same embeddings, banks and indices give
    the same loss, gradient wrt the student embedding, Z and banks. Catches the momentum
    applied to the new embedding instead of the bank, and the bugs above on a second code."""
    method, data = _crd_method(momentum=0.3)
    settings, case = data["settings"], data["cases"][0]
    reference = mid_level.CRDLoss(
        "s_norm", "empty", "t_norm", settings["feat_dim"], settings["n_data"],
        settings["nce_k"], settings["n_data"], temperature=settings["nce_t"], momentum=0.3,
    ).double()  # fmt: skip
    reference.params[1], reference.params[4] = settings["nce_t"], 0.3  # stored in float32
    reference.memory_v1.copy_(method.student_bank)
    reference.memory_v2.copy_(method.teacher_bank)
    with torch.no_grad():
        v_s = method.embed_student(tensor(case["f_s"]))
        v_t = method.embed_teacher(tensor(case["f_t"]))
    idx, contrast_idx = torch.tensor(case["idx"]), torch.tensor(case["contrast_idx"])
    v_s_ref = v_s.clone().requires_grad_(True)
    selection = {"pos_idx": idx, "contrast_idx": contrast_idx}
    expected = reference(
        {"s_norm": {"output": v_s_ref}, "empty": {"input": selection}}, {"t_norm": {"output": v_t}}
    )
    (expected_grad,) = torch.autograd.grad(expected, v_s_ref)

    from distil.methods.crd import nce_loss

    v_s_ours = v_s.clone().requires_grad_(True)
    noise = settings["nce_k"] / settings["n_data"]
    student_anchor = method._scores(method.teacher_bank, v_s_ours, contrast_idx, 0)
    teacher_anchor = method._scores(method.student_bank, v_t, contrast_idx, 1)
    ours = nce_loss(student_anchor, noise) + nce_loss(teacher_anchor, noise)
    method._update(method.student_bank, idx, v_s_ours)
    method._update(method.teacher_bank, idx, v_t)
    (grad,) = torch.autograd.grad(ours, v_s_ours)
    assert_close(ours.detach(), expected.detach().squeeze(), TIGHT, "crd loss vs torchdistill")
    assert_close(grad, expected_grad, TIGHT, "crd gradient vs torchdistill")
    assert_close(method.normalisers, reference.params[2:4], TIGHT, "crd Z vs torchdistill")
    assert_close(method.student_bank, reference.memory_v1, TIGHT, "student bank")
    assert_close(method.teacher_bank, reference.memory_v2, TIGHT, "teacher bank")
