"""The fused LM head + loss against the naive path: full logits ``hidden @ Wᵀ + b``, then
``F.cross_entropy`` and the catalogue loss, then autograd. Values and gradients must agree,
and the fused path must never build a ``(tokens × vocab)`` tensor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from distil import losses
from distil.errors import ConfigError, ShapeError, UnknownNameError
from distil.losses import TopK, chunked
from distil.losses.fused_lm import fused_lm_loss

TOKENS, HIDDEN, VOCAB = 37, 8, 50  # 37 tokens: no chunk size below divides it


def make(dtype=torch.float64, *, tokens=TOKENS, hidden=HIDDEN, vocab=VOCAB, seed=0, shape=None):
    """hidden, weight, bias (all requiring grad), labels with ignored tokens, teacher logits."""
    generator = torch.Generator().manual_seed(seed)
    lead = shape or (tokens,)

    def randn(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*size, generator=generator, dtype=torch.float64) * scale).to(dtype)

    hidden_states = randn(*lead, hidden).requires_grad_()
    weight = randn(vocab, hidden, scale=0.7).requires_grad_()
    bias = randn(vocab, scale=0.5).requires_grad_()
    labels = torch.randint(0, vocab, lead, generator=generator)
    labels.view(-1)[::5] = -100
    teacher = randn(*lead, vocab, scale=2.0)
    return hidden_states, weight, bias, labels, teacher


def naive(hidden, weight, bias, labels, teacher, *, mask=None, divergence="forward_kl",
          ce_weight=0.0, kd_weight=1.0, temperature=1.0, vocab_size=None, **options):  # fmt: skip
    """The reference: every logit at once, then the catalogue on them."""
    vocab = vocab_size or weight.shape[0]
    logits = hidden.double() @ weight[:vocab].double().T
    if bias is not None:
        logits = logits + bias[:vocab].double()
    valid = labels >= 0 if labels is not None else torch.ones(logits.shape[:-1], dtype=bool)
    if mask is not None:
        valid = valid & mask
    count = valid.sum().clamp_min(1)
    total = logits.new_zeros(())
    if labels is not None:
        per_token = F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1).clamp_min(0), reduction="none")  # fmt: skip
        total = total + ce_weight * (per_token * valid.reshape(-1)).sum() / count
    if teacher is not None:
        if "labels" in losses.options_of(divergence):
            options["labels"] = labels
        kd = losses.get(divergence)(
            logits, teacher, temperature=temperature, mask=valid, reduction="sum", **options
        )
        total = total + kd_weight * kd / count
    return total


def grads_of(value, inputs):
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    return torch.autograd.grad(value, wrt)


def assert_matches(hidden, weight, bias, labels, teacher, *, rtol=1e-9, atol=1e-11, **kwargs):
    fused = fused_lm_loss(hidden, weight, labels=labels, teacher=teacher, bias=bias, **kwargs)
    kwargs.pop("chunk_tokens", None)
    reference = naive(hidden, weight, bias, labels, teacher, **kwargs)
    torch.testing.assert_close(fused.total.double(), reference, rtol=rtol, atol=atol)
    fused_grads = grads_of(fused.total, (hidden, weight, bias))
    for got, want in zip(fused_grads, grads_of(reference, (hidden, weight, bias)), strict=True):
        torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol)
    return fused, fused_grads


CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("tvd", {}),
    ("skew_forward_kl", {"alpha": 0.2}),
    ("akl", {"mu": 0.6}),
]


@pytest.mark.parametrize("name,options", CASES)
@pytest.mark.parametrize("sparse", [False, True])
def test_matches_the_naive_path_float64(name, options, sparse):
    hidden, weight, bias, labels, teacher = make()
    teacher = TopK.from_logits(teacher, 7) if sparse else teacher
    assert_matches(hidden, weight, bias, labels, teacher, divergence=name, ce_weight=0.3,
                   kd_weight=0.8, temperature=2.0, chunk_tokens=6, **options)  # fmt: skip


@pytest.mark.parametrize("name,options", [("forward_kl", {}), ("jsd", {"beta": 0.5}), ("tvd", {})])
def test_matches_the_naive_path_float32(name, options):
    hidden, weight, bias, labels, teacher = make(torch.float32, seed=1)
    assert_matches(hidden, weight, bias, labels, teacher, divergence=name, ce_weight=1.0,
                   temperature=1.5, chunk_tokens=8, rtol=1e-4, atol=1e-5, **options)  # fmt: skip


def test_sparse_residual_tail_and_a_label_reading_loss():
    hidden, weight, bias, labels, teacher = make(seed=2)
    assert_matches(hidden, weight, bias, labels, TopK.from_logits(teacher, 5), tail="residual",
                   chunk_tokens=10)  # fmt: skip
    assert_matches(hidden, weight, bias, labels, teacher, divergence="dkd", temperature=4.0,
                   chunk_tokens=9, beta=2.0)  # fmt: skip


def test_mask_and_sequences_and_no_labels():
    hidden, weight, bias, labels, teacher = make(shape=(3, 11), seed=3)
    mask = torch.rand(3, 11, generator=torch.Generator().manual_seed(0)) > 0.3
    fused, _ = assert_matches(hidden, weight, bias, labels, teacher, mask=mask, ce_weight=0.5,
                           chunk_tokens=4)  # fmt: skip
    assert fused.tokens == int((mask & (labels >= 0)).sum())
    assert_matches(hidden, weight, bias, None, teacher, mask=mask, chunk_tokens=5)
    assert_matches(hidden, weight, None, None, teacher, chunk_tokens=7)


def test_parts_are_detached_means():
    hidden, weight, bias, labels, teacher = make(seed=4)
    fused = fused_lm_loss(hidden, weight, bias=bias, labels=labels, teacher=teacher,
                          ce_weight=0.25, kd_weight=2.0, chunk_tokens=16)  # fmt: skip
    ce = naive(hidden, weight, bias, labels, None, ce_weight=1.0)
    kd = naive(hidden, weight, bias, labels, teacher)
    torch.testing.assert_close(fused.ce, ce.detach())
    torch.testing.assert_close(fused.kd, kd.detach())
    assert not fused.ce.requires_grad and not fused.kd.requires_grad
    torch.testing.assert_close(fused.total, 0.25 * fused.ce + 2.0 * fused.kd)


def test_cross_entropy_only():
    hidden, weight, bias, labels, _ = make(seed=5)
    fused, _ = assert_matches(hidden, weight, bias, labels, None, ce_weight=1.0, chunk_tokens=6)
    torch.testing.assert_close(
        fused.total, F.cross_entropy(hidden @ weight.T + bias, labels, ignore_index=-100)
    )
    assert float(fused.kd) == 0.0


def test_vocab_slicing_ignores_and_zeroes_the_padded_rows():
    hidden, weight, bias, labels, teacher = make(vocab=56, seed=6)
    labels = labels.clamp_max(VOCAB - 1)
    _, (_, grad_weight, grad_bias) = assert_matches(
        hidden,
        weight,
        bias,
        labels,
        teacher[:, :VOCAB],
        vocab_size=VOCAB,
        ce_weight=1.0,
        chunk_tokens=6,
    )
    assert grad_weight[VOCAB:].abs().max() == 0 and grad_bias[VOCAB:].abs().max() == 0
    assert grad_weight.shape == weight.shape


def test_gradient_only_where_asked():
    hidden, weight, _, labels, teacher = make(seed=7)
    assert_matches(hidden.detach(), weight, None, labels, teacher, chunk_tokens=6)
    assert_matches(hidden, weight.detach(), None, labels, teacher, chunk_tokens=6)


def test_eval_computes_values_without_a_graph():
    hidden, weight, bias, labels, teacher = make(seed=8)
    with torch.no_grad():
        fused = fused_lm_loss(hidden, weight, bias=bias, labels=labels, teacher=teacher,
                              ce_weight=1.0, chunk_tokens=6)  # fmt: skip
    assert not fused.total.requires_grad
    reference = naive(hidden, weight, bias, labels, teacher, ce_weight=1.0)
    torch.testing.assert_close(fused.total, reference.detach())


def test_upstream_gradient_scales_the_stored_gradients():
    hidden, weight, bias, labels, teacher = make(seed=9)
    fused = fused_lm_loss(hidden, weight, labels=labels, teacher=teacher, chunk_tokens=6)
    (3.0 * fused.total).backward()
    reference = naive(hidden, weight, None, labels, teacher)
    want_hidden, want_weight = torch.autograd.grad(3.0 * reference, (hidden, weight))
    torch.testing.assert_close(hidden.grad, want_hidden)
    torch.testing.assert_close(weight.grad, want_weight)


def test_backward_through_a_retained_graph_accumulates_correctly():
    """The stored gradients are handed over without a copy when the upstream gradient is 1;
    a retained graph must still give them intact to a second backward."""
    hidden, weight, bias, labels, teacher = make(seed=13)
    fused = fused_lm_loss(hidden, weight, bias=bias, labels=labels, teacher=teacher,
                          ce_weight=1.0)  # fmt: skip
    fused.total.backward(retain_graph=True)
    fused.total.backward()
    reference = naive(hidden, weight, bias, labels, teacher, ce_weight=1.0)
    for tensor, want in zip((hidden, weight, bias), torch.autograd.grad(reference, (hidden, weight, bias)), strict=True):  # fmt: skip
        torch.testing.assert_close(tensor.grad, 2 * want)


def test_bf16_inputs_give_bf16_gradients_close_to_float32():
    hidden, weight, bias, labels, teacher = make(torch.bfloat16, seed=10)
    fused = fused_lm_loss(hidden, weight, bias=bias, labels=labels, teacher=teacher,
                          ce_weight=1.0, temperature=2.0, chunk_tokens=6)  # fmt: skip
    got = torch.autograd.grad(fused.total, (hidden, weight, bias))
    assert [g.dtype for g in got] == [torch.bfloat16] * 3
    reference = naive(hidden, weight, bias, labels, teacher, ce_weight=1.0, temperature=2.0)
    want = torch.autograd.grad(reference, (hidden, weight, bias))
    torch.testing.assert_close(fused.total.double(), reference, rtol=1e-4, atol=1e-4)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w.double(), rtol=2e-2, atol=2e-3)


def test_gradcheck_tiny_float64():
    hidden, weight, bias, labels, teacher = make(tokens=5, hidden=3, vocab=6, seed=11)
    sparse = TopK.from_logits(teacher, 3)

    def loss(h, w, b):
        return fused_lm_loss(h, w, bias=b, labels=labels, teacher=sparse, divergence="jsd",
                             ce_weight=0.5, temperature=1.7, chunk_tokens=2).total  # fmt: skip

    assert torch.autograd.gradcheck(loss, (hidden, weight, bias))


def test_loss_blocks_stay_on_the_catalogues_direct_path(monkeypatch):
    """A chunk larger than DIRECT_MAX_ELEMENTS is split into loss blocks, so the inner
    row chunking (a second gradient buffer per chunk) never runs inside the fused loss."""
    monkeypatch.setattr(chunked, "DIRECT_MAX_ELEMENTS", 3 * VOCAB)
    calls = []
    inner_apply = chunked._ChunkedRows.apply
    monkeypatch.setattr(chunked._ChunkedRows, "apply", lambda *a: calls.append(a) or inner_apply(*a))  # fmt: skip
    hidden, weight, bias, labels, teacher = make(seed=12)
    for teacher_kind, chunk in ((teacher, 16), (TopK.from_logits(teacher, 4), TOKENS)):
        calls.clear()
        fused = fused_lm_loss(hidden, weight, bias=bias, labels=labels, teacher=teacher_kind,
                              ce_weight=1.0, chunk_tokens=chunk)  # fmt: skip
        got = torch.autograd.grad(fused.total, (hidden, weight, bias))
        assert not calls
        reference = naive(hidden, weight, bias, labels, teacher_kind, ce_weight=1.0)
        assert calls  # the full-logit reference does take the chunked path at this limit
        want = torch.autograd.grad(reference, (hidden, weight, bias))
        torch.testing.assert_close(fused.total, reference)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)


class LargestOutput(TorchDispatchMode):
    """Records the largest floating tensor any op allocates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:  # an alias of its input, not an allocation
            return out
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("sparse", [False, True])
def test_never_builds_a_tokens_by_vocab_tensor(sparse):
    tokens, hidden_size, vocab, chunk = 64, 4, 40, 10
    hidden, weight, bias, labels, teacher = make(torch.float32, tokens=tokens,
                                                 hidden=hidden_size, vocab=vocab)  # fmt: skip
    teacher = TopK.from_logits(teacher, 5) if sparse else teacher
    with LargestOutput() as fused_tracker:
        fused = fused_lm_loss(hidden, weight, bias=bias, labels=labels, teacher=teacher,
                              ce_weight=1.0, chunk_tokens=chunk)  # fmt: skip
        fused.total.backward()
    with LargestOutput() as naive_tracker:
        naive(hidden, weight, bias, labels, teacher, ce_weight=1.0).backward()
    assert naive_tracker.largest >= tokens * vocab  # the tracker sees the full logits
    # a chunk's logits, the head's gradient, grad_hidden: nothing tokens × vocab
    assert fused_tracker.largest <= max(chunk * vocab, vocab * hidden_size, tokens * hidden_size)


def test_bad_inputs_are_named():
    hidden, weight, bias, labels, teacher = make()
    with pytest.raises(ShapeError, match=r"teacher logits have 49 classes.*has 50"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=teacher[:, :49])
    with pytest.raises(ShapeError, match=r"teacher logits have 50 classes.*has 45"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=teacher, vocab_size=45)
    sparse = TopK.from_logits(teacher, 4)
    with pytest.raises(ShapeError, match=r"teacher\.indices range over \[\d+, 4\d\].*45"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=sparse, vocab_size=45)
    with pytest.raises(ShapeError, match="hidden size"):
        fused_lm_loss(hidden[:, :5], weight, labels=labels, teacher=teacher)
    with pytest.raises(ShapeError, match="labels"):
        fused_lm_loss(hidden, weight, labels=labels[:5], teacher=teacher)
    with pytest.raises(UnknownNameError, match="forward_kl"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=teacher, divergence="forwrd_kl")
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=teacher, divergence="jsd", bta=0.3)
    with pytest.raises(ValueError, match="whole batches"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=teacher, divergence="dist")
    with pytest.raises(ValueError, match="ce_weight"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=None)
    with pytest.raises(ValueError, match="reads the labels"):
        fused_lm_loss(hidden, weight, labels=None, teacher=teacher, divergence="dkd")
    with pytest.raises(ShapeError, match="leading dimensions"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=teacher[:-1])
    with pytest.raises(ValueError, match="beta must be in"):
        fused_lm_loss(hidden, weight, labels=labels, teacher=teacher, divergence="jsd", beta=2.0)


def test_benchmark_paths_compute_the_same_loss():
    """The benchmark's naive path (written like other toolkits') and the fused path agree,
    and its inputs are a valid top-k (distinct ids per token)."""
    from distil.bench import fused_loss

    hidden, weight, labels, teacher = fused_loss.make_inputs(300, 16, 40, 8, seed=0)
    assert all(len(set(row.tolist())) == 8 for row in teacher.indices)
    naive_value = fused_loss.naive_loss(hidden, weight, labels, teacher)
    want = torch.autograd.grad(naive_value, (hidden, weight))
    fused_value = fused_loss.fused_loss(hidden, weight, labels, teacher)
    got = torch.autograd.grad(fused_value, (hidden, weight))
    torch.testing.assert_close(fused_value, naive_value)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    row = fused_loss.measure("fused", 300, 16, 40, 8, seed=0)
    assert row["seconds"] > 0 and row["loss"] == pytest.approx(
        float(naive_value.detach()), rel=1e-5
    )
