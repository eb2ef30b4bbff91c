"""The loss catalogue against independent references: scipy, POT, closed forms, brute force,
finite differences; and the properties every divergence must have."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax
from scipy.stats import zscore

from distil import losses
from distil.errors import ShapeError, UnknownNameError
from distil.losses import TopK, chunked

ALL = losses.LOSSES.names()
DIVERGENCES = [n for n in ALL if losses.kind_of(n) == "divergence"]
BATCH_LEVEL = {"sinkhorn", "dist"}  # compare whole batches: no per-row values
DENSE_ONLY = {"sinkhorn", "dist", "dkd", "logit_std_kd", "pld", "ofa"}


def logits(*shape: int, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


def labels_for(student: torch.Tensor, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, student.shape[-1], student.shape[:-1], generator=generator)


def call(name: str, student, teacher, **options):
    """Call any registered loss, giving it labels when it takes them."""
    if "labels" in losses.options_of(name) and "labels" not in options:
        options["labels"] = labels_for(student)
    return losses.get(name)(student, teacher, **options)


def probs(z: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    return softmax(z.detach().numpy() / temperature, axis=-1)


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("name", DIVERGENCES)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.floats(0.5, 8.0))
def test_every_divergence_is_nonnegative_and_zero_at_equality(name, seed, temperature):
    student, teacher = logits(6, 7, seed=seed), logits(6, 7, seed=seed + 1)
    assert float(call(name, student, teacher, temperature=temperature)) >= -1e-9
    same = call(name, student, student.clone(), temperature=temperature)
    assert float(same) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_jsd_half_is_symmetric_and_bounded(seed):
    a, b = logits(5, 6, seed=seed), logits(5, 6, seed=seed + 7)
    forward, backward = losses.jsd(a, b), losses.jsd(b, a)
    assert float(forward) == pytest.approx(float(backward), rel=1e-10)
    assert float(forward) <= np.log(2) + 1e-12


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_jsd_and_skew_limits(seed):
    # moderate logits: the O(β) remainder scales with max p/q, which scale-3 logits make huge
    student, teacher = logits(4, 9, scale=1.0, seed=seed), logits(4, 9, scale=1.0, seed=seed + 1)
    fkl, rkl = (
        float(losses.forward_kl(student, teacher)),
        float(losses.reverse_kl(student, teacher)),
    )
    small = 1e-7  # JSD(β) − β·KL(p ‖ q) is O(β²)
    assert float(losses.jsd(student, teacher, beta=small)) / small == pytest.approx(fkl, rel=1e-4)
    assert float(losses.jsd(student, teacher, beta=1 - small)) / small == pytest.approx(
        rkl, rel=1e-4
    )
    # the ends are the two KLs themselves (TRL's and Liger-Kernel's convention), not zero
    assert float(losses.jsd(student, teacher, beta=0.0)) == fkl
    assert float(losses.jsd(student, teacher, beta=1.0)) == rkl
    assert float(losses.skew_forward_kl(student, teacher, alpha=0.0)) == pytest.approx(
        fkl, rel=1e-12
    )
    assert float(losses.skew_reverse_kl(student, teacher, alpha=0.0)) == pytest.approx(
        rkl, rel=1e-12
    )
    assert float(losses.skew_forward_kl(student, teacher, alpha=1.0)) == pytest.approx(
        0.0, abs=1e-12
    )
    # skew KL is bounded by −log α
    assert (
        float(losses.skew_forward_kl(student * 50, teacher * 50, alpha=0.1)) <= -np.log(0.1) + 1e-12
    )


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_family_matches_scipy(temperature):
    student, teacher = logits(5, 9, seed=1), logits(5, 9, seed=2)
    p, q = probs(teacher, temperature), probs(student, temperature)
    t2 = temperature**2
    expected = {
        "forward_kl": rel_entr(p, q).sum(-1).mean() * t2,
        "reverse_kl": rel_entr(q, p).sum(-1).mean() * t2,
        "jsd": np.mean([jensenshannon(pi, qi) ** 2 for pi, qi in zip(p, q, strict=True)]) * t2,
        "tvd": 0.5 * np.abs(p - q).sum(-1).mean() * t2,
        "skew_forward_kl": rel_entr(p, 0.1 * p + 0.9 * q).sum(-1).mean() * t2,
        "skew_reverse_kl": rel_entr(q, 0.1 * q + 0.9 * p).sum(-1).mean() * t2,
    }
    for name, value in expected.items():
        got = float(losses.get(name)(student, teacher, temperature=temperature))
        assert got == pytest.approx(value, rel=1e-9), name


@pytest.mark.parametrize(("t", "temperature"), [(0.0, 1.0), (0.4, 1.0), (0.7, 2.0), (1.0, 1.0)])
def test_taid_kl_matches_the_interpolated_target(t, temperature):
    """T²·KL(p_t ‖ q) with p_t = softmax(((1 − t)·z_s + t·z_t) / T), built with scipy."""
    student, teacher = logits(5, 9, seed=11), logits(5, 9, seed=12)
    target = softmax(((1 - t) * student.numpy() + t * teacher.numpy()) / temperature, axis=-1)
    expected = rel_entr(target, probs(student, temperature)).sum(-1).mean() * temperature**2
    got = float(losses.taid_kl(student, teacher, t=t, temperature=temperature))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.3, 0.9])
def test_generalised_jsd_matches_its_definition(beta):
    student, teacher = logits(5, 8, seed=5), logits(5, 8, seed=6)
    p, q = probs(teacher), probs(student)
    m = beta * p + (1 - beta) * q
    expected = (beta * rel_entr(p, m).sum(-1) + (1 - beta) * rel_entr(q, m).sum(-1)).mean()
    assert float(losses.jsd(student, teacher, beta=beta)) == pytest.approx(expected, rel=1e-10)


def ab_reference(p: np.ndarray, q: np.ndarray, a: float, b: float) -> float:
    terms = p**a * q**b - a / (a + b) * p ** (a + b) - b / (a + b) * q ** (a + b)
    return float((-terms.sum(-1) / (a * b)).mean())


def test_alpha_beta_divergence_cases():
    student, teacher = logits(4, 7, seed=7), logits(4, 7, seed=8)
    p, q = probs(teacher), probs(student)
    ab = losses.ab_div
    for a, b in [(0.7, 0.4), (0.5, 0.5), (2.0, -0.5), (1.5, 0.3)]:
        assert float(ab(student, teacher, alpha=a, beta=b)) == pytest.approx(
            ab_reference(p, q, a, b), rel=1e-9
        )
    assert float(ab(student, teacher, alpha=1.0, beta=0.0)) == pytest.approx(
        float(losses.forward_kl(student, teacher)), rel=1e-10
    )
    assert float(ab(student, teacher, alpha=0.0, beta=1.0)) == pytest.approx(
        float(losses.reverse_kl(student, teacher)), rel=1e-10
    )
    hellinger = 2 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(-1).mean()
    assert float(ab(student, teacher)) == pytest.approx(hellinger, rel=1e-9)
    # the limiting branches are the limits of the general formula
    for limit, near in [
        ((0.0, 0.6), (1e-6, 0.6)),
        ((0.6, 0.0), (0.6, 1e-6)),
        ((0.6, -0.6), (0.6, -0.6 + 1e-6)),
        ((0.0, 0.0), (1e-6, 1e-6)),
    ]:
        assert float(ab(student, teacher, alpha=limit[0], beta=limit[1])) == pytest.approx(
            ab_reference(p, q, *near), rel=1e-3)  # fmt: skip


def akl_reference(p: np.ndarray, q: np.ndarray, mu: float) -> float:
    values = []
    for p_row, q_row in zip(p, q, strict=True):
        order = sorted(range(len(p_row)), key=lambda c: -p_row[c])
        cumulative, tail = 0.0, set()
        for rank, c in enumerate(order):
            cumulative += p_row[c]
            if rank > 0 and cumulative > mu:
                tail.add(c)
        gap = np.abs(p_row - q_row)
        g_tail = sum(gap[c] for c in tail)
        g_head = gap.sum() - g_tail
        w_head = g_head / (g_head + g_tail)
        values.append(
            w_head * rel_entr(p_row, q_row).sum() + (1 - w_head) * rel_entr(q_row, p_row).sum()
        )
    return float(np.mean(values))


@pytest.mark.parametrize("mu", [0.3, 0.5, 0.8])
def test_akl_matches_a_loop_reference(mu):
    student, teacher = logits(6, 10, seed=9), logits(6, 10, seed=10)
    got = float(losses.akl(student, teacher, mu=mu))
    assert got == pytest.approx(akl_reference(probs(teacher), probs(student), mu), rel=1e-9)


@pytest.mark.parametrize("name", ["akl", "bdkd"])
def test_detached_weights_give_the_weighted_kl_gradient(name):
    """With detached weights the gradient is w·∇FKL + (1 − w)·∇RKL at the current weights."""
    student = logits(5, 7, seed=42).requires_grad_()
    teacher = logits(5, 7, seed=43)
    per_row = losses.get(name)(student, teacher, reduction="none")
    fkl = losses.forward_kl(student, teacher, reduction="none")
    rkl = losses.reverse_kl(student, teacher, reduction="none")
    w = ((per_row - rkl) / (fkl - rkl)).detach()  # recover each row's forward weight
    (grad,) = torch.autograd.grad(per_row.sum(), student)
    (expected,) = torch.autograd.grad((w * fkl + (1 - w) * rkl).sum(), student)
    torch.testing.assert_close(grad, expected)


def test_bdkd_weights_by_entropy():
    student, teacher = logits(6, 10, seed=11), logits(6, 10, seed=12)
    p, q = probs(teacher), probs(student)
    h_p, h_q = -(p * np.log(p)).sum(-1), -(q * np.log(q)).sum(-1)
    w_f = h_p / (h_p + h_q)
    expected = (w_f * rel_entr(p, q).sum(-1) + (1 - w_f) * rel_entr(q, p).sum(-1)).mean()
    assert float(losses.bdkd(student, teacher)) == pytest.approx(expected, rel=1e-9)


def test_sinkhorn_transport_cost_matches_pot():
    student, teacher = logits(7, 5, seed=13), logits(7, 5, seed=14)
    p, q = probs(teacher), probs(student)
    cost = np.abs(q[:, None, :] - p[None, :, :]).sum(-1)
    uniform = np.full(7, 1 / 7)
    for epsilon in (0.1, 0.5):
        expected = ot.sinkhorn2(uniform, uniform, cost, reg=epsilon, numItermax=5000, stopThr=1e-12)
        got = losses.sinkhorn(student, teacher, epsilon=epsilon, iterations=2000, debias=False)
        assert float(got) == pytest.approx(float(expected), rel=1e-5)
    sq_cost = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    expected = ot.sinkhorn2(uniform, uniform, sq_cost, reg=0.2, numItermax=5000, stopThr=1e-12)
    got = losses.sinkhorn(
        student, teacher, epsilon=0.2, iterations=2000, cost="sq_l2", debias=False
    )
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_sinkhorn_divergence_is_positive_and_approaches_exact_ot():
    student, teacher = logits(6, 4, seed=15), logits(6, 4, seed=16)
    p, q = probs(teacher), probs(student)
    cost = np.abs(q[:, None, :] - p[None, :, :]).sum(-1)
    exact = ot.emd2(np.full(6, 1 / 6), np.full(6, 1 / 6), cost)
    small_eps = losses.sinkhorn(student, teacher, epsilon=0.002, iterations=3000)
    assert 0 < float(small_eps) == pytest.approx(exact, rel=0.05)


def pl_reference(s: np.ndarray, t: np.ndarray, y: np.ndarray, top_k=None) -> float:
    values = []
    for s_row, t_row, label in zip(s, t, y, strict=True):
        rest = sorted((c for c in range(len(t_row)) if c != label), key=lambda c: -t_row[c])
        order = [label, *rest]
        weights = softmax(t_row)
        total = 0.0
        for k, c in enumerate(order[: top_k or len(order)]):
            remaining = [s_row[j] for j in order[k:]]
            total += weights[c] * (np.log(np.sum(np.exp(remaining))) - s_row[c])
        values.append(total)
    return float(np.mean(values))


@pytest.mark.parametrize("top_k", [None, 3])
def test_pld_matches_brute_force_plackett_luce(top_k):
    student, teacher = logits(5, 6, seed=17), logits(5, 6, seed=18)
    y = labels_for(student, seed=3)
    got = float(losses.pld(student, teacher, labels=y, top_k=top_k))
    assert got == pytest.approx(
        pl_reference(student.numpy(), teacher.numpy(), y.numpy(), top_k), rel=1e-9
    )


def test_label_losses_drop_ignored_rows():
    student, teacher = logits(4, 6, seed=44), logits(4, 6, seed=45)
    labels = torch.tensor([1, -100, 2, -100])
    keep = labels >= 0
    for name in ("dkd", "pld"):
        got = losses.get(name)(student, teacher, labels=labels)
        expected = losses.get(name)(student[keep], teacher[keep], labels=labels[keep])
        assert float(got) == pytest.approx(float(expected), rel=1e-12), name


def test_dkd_decomposes_classic_kd():
    """KD = TCKD + (1 − p_target)·NCKD per sample (Zhao et al., Eq. 1–4)."""
    student, teacher = logits(6, 10, seed=19), logits(6, 10, seed=20)
    y = labels_for(student, seed=4)
    t = 4.0
    tckd = losses.dkd(student, teacher, labels=y, temperature=t, alpha=1, beta=0, reduction="none")
    nckd = losses.dkd(student, teacher, labels=y, temperature=t, alpha=0, beta=1, reduction="none")
    p_target = torch.softmax(teacher / t, -1).gather(-1, y[:, None]).squeeze(-1)
    kd = losses.forward_kl(student, teacher, temperature=t, reduction="none")
    torch.testing.assert_close(kd, tckd + (1 - p_target) * nckd)
    # and against mdistiller's formulation with the −1000 mask on the target logit
    gt = np.eye(10)[y.numpy()]
    ps, pt = probs(student, t), probs(teacher, t)
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    ref_tckd = rel_entr(bt, bs).sum(1) * t**2
    ns = softmax(student.numpy() / t - 1000.0 * gt, axis=1)
    nt = softmax(teacher.numpy() / t - 1000.0 * gt, axis=1)
    ref_nckd = rel_entr(nt, ns).sum(1) * t**2
    np.testing.assert_allclose(tckd.numpy(), ref_tckd, rtol=1e-9)
    np.testing.assert_allclose(nckd.numpy(), ref_nckd, rtol=1e-6)


def test_dist_matches_numpy_correlations():
    student, teacher = logits(8, 5, seed=21), logits(8, 5, seed=22)
    p, q = probs(teacher, 2.0), probs(student, 2.0)
    inter = 1 - np.mean([np.corrcoef(qi, pi)[0, 1] for qi, pi in zip(q, p, strict=True)])
    intra = 1 - np.mean([np.corrcoef(q[:, c], p[:, c])[0, 1] for c in range(5)])
    got = losses.dist(student, teacher, temperature=2.0, beta=1.0, gamma=2.0)
    assert float(got) == pytest.approx(4 * (inter + 2 * intra), rel=1e-9)


def test_logit_standardisation_matches_scipy_zscore():
    student, teacher = logits(5, 8, seed=23) + 5, logits(5, 8, seed=24) * 10
    zs, zt = zscore(student.numpy(), axis=1, ddof=1), zscore(teacher.numpy(), axis=1, ddof=1)
    expected = rel_entr(softmax(zt / 2, 1), softmax(zs / 2, 1)).sum(1).mean() * 4
    assert float(losses.logit_std_kd(student, teacher, temperature=2.0)) == pytest.approx(
        expected, rel=1e-5
    )
    # invariant to each model's logit shift and scale
    shifted = losses.logit_std_kd(student * 3 + 7, teacher, temperature=2.0)
    assert float(shifted) == pytest.approx(
        float(losses.logit_std_kd(student, teacher, temperature=2.0)), rel=1e-5
    )


# ----------------------------------------------------------------------------- conventions


def test_reductions_and_mask_on_sequences():
    student, teacher = logits(2, 3, 11, seed=25), logits(2, 3, 11, seed=26)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    reference = rel_entr(probs(teacher), probs(student)).sum(-1)
    per_token = losses.forward_kl(student, teacher, reduction="none")
    np.testing.assert_allclose(per_token.numpy(), reference, rtol=1e-10)
    masked = losses.forward_kl(student, teacher, mask=mask)
    assert float(masked) == pytest.approx(reference[mask.numpy()].mean(), rel=1e-10)
    total = losses.forward_kl(student, teacher, mask=mask, reduction="sum")
    assert float(total) == pytest.approx(reference[mask.numpy()].sum(), rel=1e-10)
    with pytest.raises(ValueError, match="batchmean"):
        losses.forward_kl(student, teacher, reduction="mean")


def test_kl_gradient_is_temperature_times_probability_gap():
    """d/dz_s [T² KL(p_T ‖ q_T)] = T (q_T − p_T) / N: the closed form behind the T² rule."""
    t = 3.0
    student = logits(4, 6, seed=27).requires_grad_()
    teacher = logits(4, 6, seed=28)
    losses.forward_kl(student, teacher, temperature=t).backward()
    expected = t * (torch.softmax(student.detach() / t, -1) - torch.softmax(teacher / t, -1)) / 4
    torch.testing.assert_close(student.grad, expected)


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_float64(name):
    student = logits(4, 5, seed=29).requires_grad_()
    teacher = logits(4, 5, seed=30)
    options = {
        "sinkhorn": {"iterations": 20},
        "akl": {"detach_weights": False},
        "bdkd": {"detach_weights": False},
    }.get(name, {})
    y = labels_for(student)

    def fn(s):
        extra = {"labels": y} if "labels" in losses.options_of(name) else {}
        return losses.get(name)(s, teacher, temperature=2.0, **extra, **options)

    assert torch.autograd.gradcheck(fn, (student,))


@pytest.mark.parametrize("name", ALL)
def test_stable_for_huge_logits_and_low_precision(name):
    student, teacher = (
        logits(6, 8, scale=1e4, seed=31).float(),
        logits(6, 8, scale=1e4, seed=32).float(),
    )
    assert torch.isfinite(call(name, student, teacher))
    for dtype in (torch.bfloat16, torch.float16):
        low_s, low_t = (student / 1e4).to(dtype), (teacher / 1e4).to(dtype)
        low = call(name, low_s, low_t)
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, call(name, low_s.float(), low_t.float()))


def test_shape_mismatch_names_both_shapes():
    for name in ALL:
        with pytest.raises(ShapeError, match=r"\(2, 10\).*\(2, 12\)"):
            call(name, torch.zeros(2, 10), torch.zeros(2, 12))


def test_unknown_loss_suggests_closest():
    with pytest.raises(UnknownNameError, match="forward_kl"):
        losses.get("forward_kll")


# ----------------------------------------------------------------------------- sparse teachers


SPARSE_OK = [n for n in ALL if n not in DENSE_ONLY]


@pytest.mark.parametrize(
    ("name", "tail"), itertools.product(SPARSE_OK, ["renormalize", "residual"])
)
def test_sparse_teacher_with_all_classes_equals_dense(name, tail):
    student, teacher = logits(3, 4, 12, seed=33), logits(3, 4, 12, seed=34)
    temperature = 2.0 if tail == "renormalize" else 1.0
    dense = losses.get(name)(student, teacher, temperature=temperature, reduction="none")
    sparse = losses.get(name)(student, TopK.from_logits(teacher, k=12), temperature=temperature,
                              reduction="none", tail=tail)  # fmt: skip
    # the top-k log-probs are stored in float32, as a cache would: agree to that precision
    torch.testing.assert_close(sparse.double(), dense, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tail", ["renormalize", "residual"])
def test_sparse_teacher_with_fewer_classes_is_a_divergence(tail):
    student = logits(6, 20, seed=35)
    teacher = TopK.from_logits(student, k=5)
    assert float(losses.forward_kl(student, teacher, tail=tail)) == pytest.approx(0.0, abs=1e-6)
    other = TopK.from_logits(logits(6, 20, seed=36), k=5)
    assert float(losses.forward_kl(student, other, tail=tail)) > 0.01


def test_residual_tail_is_a_k_plus_one_bucket_kl():
    student, teacher = logits(4, 9, seed=37), logits(4, 9, seed=38)
    indices = teacher.topk(3, dim=-1).indices
    top = TopK(indices, torch.log_softmax(teacher, -1).gather(-1, indices))  # float64, exact
    p, q = probs(teacher), probs(student)
    idx = top.indices.numpy()
    p_k, q_k = np.take_along_axis(p, idx, 1), np.take_along_axis(q, idx, 1)
    p_b = np.concatenate([p_k, 1 - p_k.sum(1, keepdims=True)], 1)
    q_b = np.concatenate([q_k, 1 - q_k.sum(1, keepdims=True)], 1)
    got = float(losses.forward_kl(student, top, tail="residual"))
    assert got == pytest.approx(rel_entr(p_b, q_b).sum(1).mean(), rel=1e-5)


def test_sparse_errors_name_the_problem():
    student = logits(2, 6, seed=39)
    with pytest.raises(ValueError, match="temperature=1"):
        losses.forward_kl(student, TopK.from_logits(student, 3), tail="residual", temperature=2.0)
    with pytest.raises(ShapeError, match="vocabulary"):
        losses.forward_kl(
            student, TopK(torch.tensor([[0, 9], [1, 2]]), torch.log(torch.full((2, 2), 0.4)))
        )
    with pytest.raises(ShapeError, match="full logits"):
        losses.dkd(student, TopK.from_logits(student, 3), labels=torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("name", [n for n in ALL if n not in BATCH_LEVEL])
def test_chunked_path_gives_the_same_loss_and_gradients(name, monkeypatch):
    student = logits(3, 5, 40, seed=40).float().requires_grad_()
    teacher = logits(3, 5, 40, seed=41).float()
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) > 0.3
    direct = call(name, student, teacher, mask=mask, temperature=2.0)
    (direct_grad,) = torch.autograd.grad(direct, student)
    monkeypatch.setattr(chunked, "DIRECT_MAX_ELEMENTS", 0)
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 90)  # blocks of 2 rows
    chunk = call(name, student, teacher, mask=mask, temperature=2.0)
    (chunk_grad,) = torch.autograd.grad(chunk, student)
    torch.testing.assert_close(chunk, direct)
    torch.testing.assert_close(chunk_grad, direct_grad)
    if name in DENSE_ONLY:
        return
    sparse = TopK.from_logits(teacher, 7)
    value = losses.get(name)(student, sparse, mask=mask, tail="residual")
    monkeypatch.setattr(chunked, "DIRECT_MAX_ELEMENTS", 1 << 22)
    torch.testing.assert_close(value, losses.get(name)(student, sparse, mask=mask, tail="residual"))
