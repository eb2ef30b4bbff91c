"""A fused LM head + distillation loss that never holds the ``(tokens × vocab)`` logits.

A language-model student ends in ``logits = hidden @ weightᵀ (+ bias)``. Computed naively,
the ``(N, V)`` logits, their log-softmax and their gradient are alive together: several GB at
V = 128k and N = 8k tokens, far more than the head's own gradient. :func:`fused_lm_loss`
walks over chunks of tokens instead. For each chunk it computes the chunk's logits, the loss
terms (summed over the chunk's valid tokens) and, right away, their gradient with respect to
the logits; it turns that into the chunk's rows of ``grad_hidden`` and adds it into
``grad_weight`` (and ``grad_bias``), then frees the chunk. Backward only rescales the stored
gradients by the upstream scalar. Memory is ``grad_hidden + grad_weight`` plus one chunk's
logits-sized intermediates, whatever N.

Because the gradients are computed in forward, the weights of the terms (cross-entropy and
distillation) must be known up front, and the result is first-order only (no double
backward). The distillation term is any row-wise loss of the catalogue, called by name, so
its formula, options and sparse-teacher handling live in one place; this module only owns
the chunk walk and the head's matmuls.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.errors import ConfigError, ShapeError
from distil.losses import chunked, registry
from distil.losses.sparse import TopK, log_residual
from distil.registry import did_you_mean

#: Logits per token chunk when ``chunk_tokens`` is not given (64 Mi elements, 256 MiB of
#: float32: about the size of ``grad_weight`` itself at H = 2048, which is held anyway).
#: Fewer tokens per chunk save little memory but cost time: every chunk reads the whole head
#: twice and updates all of ``grad_weight``, and thin matmuls split badly over threads. On a
#: 2-core CPU, chunks of ~130 tokens (V = 128k) ran up to 1.3× slower than the naive path,
#: chunks of 500–2000 tokens on par with it.
CHUNK_LOGITS = 1 << 26
#: Catalogue losses that compare whole batches (no per-token value), so they cannot be
#: summed chunk by chunk.
BATCH_COUPLED = frozenset({"dist", "sinkhorn"})


@dataclass(frozen=True)
class FusedLMLoss:
    """The fused loss and its parts, each a mean over the ``tokens`` valid tokens.

    ``total = ce_weight·ce + kd_weight·kd`` is differentiable (with respect to hidden, weight
    and bias); ``ce`` and ``kd`` are detached, for logging (0 when the term is absent).
    """

    total: Tensor
    ce: Tensor
    kd: Tensor
    tokens: int


def fused_lm_loss(
    hidden: Tensor,
    weight: Tensor,
    *,
    labels: Tensor | None,
    teacher: Tensor | TopK | None = None,
    mask: Tensor | None = None,
    divergence: str = "forward_kl",
    ce_weight: float = 0.0,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    bias: Tensor | None = None,
    vocab_size: int | None = None,
    chunk_tokens: int | None = None,
    **divergence_options: object,
) -> FusedLMLoss:
    """``ce_weight``·CE(labels) + ``kd_weight``·``divergence``(teacher ‖ student), mean over
    valid tokens, with the student's logits ``hidden @ weightᵀ + bias`` computed chunk by chunk.

    Shapes: ``hidden`` ``(B, T, H)`` or ``(N, H)``; ``weight`` ``(V, H)``; ``bias`` ``(V,)``;
    ``labels`` and ``mask`` the leading shape of ``hidden``; ``teacher`` dense logits
    ``(…, V')`` or a :class:`TopK` ``(…, k)``, where ``V' = vocab_size or V``.

    * Valid tokens are those with ``labels ≥ 0`` (-100 = ignore) and ``mask`` True; both
      terms average over them, the distillation term as the catalogue's ``batchmean``
      (so it is T²·divergence at ``temperature``; CE is always at T = 1).
    * ``vocab_size`` keeps the first ``vocab_size`` rows of the head (embeddings padded past
      the tokenizer's vocabulary); the padded rows get zero gradient.
    * ``divergence`` is any row-wise loss of :mod:`distil.losses.registry`; its options
      (``beta``, ``tail``, …) pass as keywords; losses that read labels get them.
    * The teacher is a fixed target: it receives no gradient.
    * bf16/fp16 ``hidden``/``weight`` are upcast to float32 chunk by chunk (the weight once,
      which costs one float32 copy of the head); gradients come back in the inputs' dtypes.
    * ``chunk_tokens`` defaults to ``CHUNK_LOGITS // V'`` tokens per chunk.

    Peak memory beyond the inputs: ``grad_hidden`` and ``grad_weight`` (float32 for the
    latter while accumulating), one chunk's logits, and the loss's intermediates on blocks
    of at most :data:`~distil.losses.chunked.DIRECT_MAX_ELEMENTS` logits. Backward hands the
    stored gradients over without a copy when the upstream gradient is 1.
    """
    loss_function, reads_labels = _divergence_of(divergence, divergence_options)
    if reads_labels and teacher is not None and labels is None:
        raise ValueError(f"loss {divergence!r} reads the labels: pass labels")
    if teacher is None and ce_weight == 0:
        raise ValueError("teacher=None leaves only the cross-entropy: set ce_weight > 0")
    if ce_weight != 0 and labels is None:
        raise ValueError(f"ce_weight={ce_weight} needs labels")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    vocab = _check_head(hidden, weight, bias, vocab_size)
    leading = tuple(hidden.shape[:-1])
    valid_rows = _valid_rows(labels, mask, leading, hidden.device)
    teacher = _check_teacher(teacher, leading, vocab)
    if chunk_tokens is None:
        chunk_tokens = max(1, CHUNK_LOGITS // vocab)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be ≥ 1, got {chunk_tokens}")

    inputs = (hidden, weight, bias)
    wants = tuple(torch.is_grad_enabled() and t is not None and t.requires_grad for t in inputs)
    walk = _ChunkWalk(
        hidden.detach().reshape(-1, hidden.shape[-1]),
        weight.detach(),
        None if bias is None else bias.detach(),
        vocab=vocab,
        labels=None if labels is None else labels.reshape(-1).to(hidden.device),
        teacher=teacher,
        loss_function=loss_function,
        options={**divergence_options, "temperature": temperature},
        reads_labels=reads_labels,
        # A top-k teacher and a distribution loss (reads no labels): both terms can come from
        # the student's k + 1 gathered logits and one normaliser (``_support_terms``).
        sparse_support=isinstance(teacher, TopK)
        and not reads_labels
        and registry.accepts(divergence, "tail"),
        ce_weight=ce_weight,
        kd_weight=kd_weight if teacher is not None else 0.0,
        wants=wants,
    )
    ce_sum, kd_sum, grads = walk.run(valid_rows, chunk_tokens)
    tokens = int(valid_rows.numel())
    count = max(tokens, 1)
    ce, kd = ce_sum / count, kd_sum / count
    total = ce_weight * ce + walk.kd_weight * kd
    if any(wants):
        grad_hidden, grad_weight, grad_bias = grads
        if grad_hidden is not None:
            grad_hidden = grad_hidden.reshape(hidden.shape)
        total = _PrecomputedGradients.apply(total, (grad_hidden, grad_weight, grad_bias), *inputs)
    return FusedLMLoss(total=total, ce=ce.detach(), kd=kd.detach(), tokens=tokens)


def _divergence_of(name: str, options: dict[str, object]) -> tuple[registry.LossFunction, bool]:
    """The registered loss, and whether it reads labels, after checking name and options
    before any work (a typo should not cost a forward pass)."""
    loss_function = registry.get(name)
    if name in BATCH_COUPLED:
        raise ValueError(
            f"loss {name!r} compares whole batches, so it cannot be summed over token chunks; "
            "use a per-token loss such as 'forward_kl', 'reverse_kl' or 'jsd'"
        )
    parameters = inspect.signature(loss_function).parameters
    accepted = [n for n in registry.options_of(name) if n != "labels"]
    accepted += ["tail"] if "tail" in parameters else []
    for key in options:
        if key not in accepted:
            hint = did_you_mean(key, accepted) if accepted else "; it takes no options"
            raise ConfigError(
                f"loss {name!r} has no option {key!r}{hint} (temperature, mask and the "
                "reduction are fused_lm_loss's own)"
            )
    return loss_function, "labels" in parameters


def _check_head(hidden: Tensor, weight: Tensor, bias: Tensor | None, vocab_size: int | None) -> int:
    """The vocabulary the loss sees, after checking that hidden, weight and bias fit."""
    if hidden.dim() not in (2, 3) or weight.dim() != 2:
        raise ShapeError(
            f"hidden {tuple(hidden.shape)} must be (N, H) or (B, T, H) and weight "
            f"{tuple(weight.shape)} must be (V, H)"
        )
    if hidden.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} must agree on the "
            "hidden size H (weight is (V, H), as in nn.Linear)"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ShapeError(f"bias {tuple(bias.shape)} must be (V,) = ({weight.shape[0]},)")
    if vocab_size is None:
        return weight.shape[0]
    if not 1 <= vocab_size <= weight.shape[0]:
        raise ShapeError(
            f"vocab_size={vocab_size} must be in [1, {weight.shape[0]}] (weight has "
            f"{weight.shape[0]} rows)"
        )
    return vocab_size


def _valid_rows(
    labels: Tensor | None, mask: Tensor | None, leading: tuple[int, ...], device: torch.device
) -> Tensor:
    """Indices ``(n,)`` of the flattened tokens that count: labelled (label ≥ 0, so the usual
    -100 drops a token) and unmasked. Only these rows are ever gathered into a chunk, so
    padding costs no matmul."""
    keep = torch.ones(leading, dtype=torch.bool, device=device)
    for name, tensor in (("labels", labels), ("mask", mask)):
        if tensor is not None and tuple(tensor.shape) != leading:
            raise ShapeError(
                f"{name} {tuple(tensor.shape)} must match hidden's leading dimensions {leading}"
            )
    if labels is not None:
        keep = labels.to(device) >= 0
    if mask is not None:
        keep = keep & mask.to(device=device, dtype=torch.bool)
    return keep.reshape(-1).nonzero().squeeze(1)


def _check_teacher(
    teacher: Tensor | TopK | None, leading: tuple[int, ...], vocab: int
) -> Tensor | TopK | None:
    """The teacher as rows ``(N, ·)``, detached, after checking it against the student."""
    if teacher is None:
        return None
    if isinstance(teacher, TopK):
        if tuple(teacher.indices.shape[:-1]) != leading:
            raise ShapeError(
                f"teacher.indices {tuple(teacher.indices.shape)} must match hidden's leading "
                f"dimensions {leading}"
            )
        if teacher.indices.numel():
            low, high = int(teacher.indices.min()), int(teacher.indices.max())
            if low < 0 or high >= vocab:
                raise ShapeError(
                    f"teacher.indices range over [{low}, {high}] but the student's vocabulary "
                    f"has {vocab} entries (vocabulary mismatch?)"
                )
        indices, logprobs = teacher.rows()
        return TopK(indices=indices, logprobs=logprobs.detach())
    if tuple(teacher.shape[:-1]) != leading:
        raise ShapeError(
            f"teacher logits {tuple(teacher.shape)} must match hidden's leading dimensions "
            f"{leading}"
        )
    if teacher.shape[-1] != vocab:
        raise ShapeError(
            f"teacher logits have {teacher.shape[-1]} classes but the student's vocabulary has "
            f"{vocab} (weight rows, or vocab_size); pass matching vocabularies"
        )
    return teacher.detach().reshape(-1, vocab)


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any input is float64 (gradcheck), else float32: softmax needs the range."""
    dtypes = [t.dtype for t in tensors if t is not None]
    return torch.float64 if torch.float64 in dtypes else torch.float32


@dataclass
class _ChunkWalk:
    """The chunk loop: loss values and, where wanted, gradients of the weighted sum."""

    hidden_rows: Tensor  # (N, H)
    weight: Tensor  # (V, H)
    bias: Tensor | None  # (V,)
    vocab: int
    labels: Tensor | None  # (N,)
    teacher: Tensor | TopK | None  # (N, V') or rows (N, k)
    loss_function: registry.LossFunction
    options: dict[str, object]  # the loss's keywords, temperature included
    reads_labels: bool
    sparse_support: bool
    ce_weight: float
    kd_weight: float
    wants: tuple[bool, ...]  # gradients for (hidden, weight, bias)

    def run(self, valid_rows: Tensor, chunk_tokens: int) -> tuple[Tensor, Tensor, tuple]:
        """(ce sum, kd sum, (grad_hidden, grad_weight, grad_bias)), each grad the gradient of
        ``(ce_weight·ce_sum + kd_weight·kd_sum) / tokens`` or None where not wanted."""
        dtype = _compute_dtype(self.hidden_rows, self.weight, self.bias)
        # A view when the head is already float32/64; one upcast copy for bf16/fp16 heads
        # rather than one per chunk.
        head = self.weight[: self.vocab].to(dtype)  # (V', H)
        head_bias = None if self.bias is None else self.bias[: self.vocab].to(dtype)
        want_hidden, want_weight, want_bias = self.wants
        device = self.hidden_rows.device
        grad_hidden = torch.zeros_like(self.hidden_rows) if want_hidden else None
        grad_weight = (
            torch.zeros(self.weight.shape, dtype=dtype, device=device) if want_weight else None
        )
        grad_bias = torch.zeros(self.weight.shape[0], dtype=dtype, device=device) if want_bias else None  # fmt: skip
        scale = 1.0 / max(int(valid_rows.numel()), 1)
        ce_sum = torch.zeros((), dtype=dtype, device=device)
        kd_sum = torch.zeros((), dtype=dtype, device=device)
        valid_rows = valid_rows.to(device)
        with torch.no_grad():
            for start in range(0, valid_rows.numel(), chunk_tokens):
                rows = valid_rows[start : start + chunk_tokens]
                hidden_chunk = self.hidden_rows.index_select(0, rows).to(dtype)  # (c, H)
                if head_bias is None:
                    logits = hidden_chunk @ head.T  # (c, V')
                else:
                    logits = torch.addmm(head_bias, hidden_chunk, head.T)
                ce_chunk, kd_chunk = self._terms(logits, rows, scale)
                ce_sum += ce_chunk
                kd_sum += kd_chunk
                grad_logits = logits  # _terms overwrote the logits with their gradient
                if grad_hidden is not None:
                    grad_hidden.index_copy_(0, rows, (grad_logits @ head).to(grad_hidden.dtype))
                if grad_weight is not None:
                    grad_weight[: self.vocab].addmm_(grad_logits.T, hidden_chunk)
                if grad_bias is not None:
                    grad_bias[: self.vocab] += grad_logits.sum(0)
                # Free the chunk now: rebinding ``logits`` on the next pass would hold two.
                del logits, grad_logits, hidden_chunk
        grads = (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(self.weight.dtype),
            None if grad_bias is None else grad_bias.to(self.bias.dtype),
        )
        return ce_sum, kd_sum, grads

    def _terms(self, logits: Tensor, rows: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        """Sums of CE and KD over one chunk. With gradients wanted, ``logits`` ``(c, V')`` is
        overwritten in place by the gradient of ``scale·(ce_weight·CE + kd_weight·KD)``: a
        block's logits are not needed once its loss is computed, and this saves a buffer.

        The loss runs on blocks of at most ``DIRECT_MAX_ELEMENTS`` logits, so the catalogue
        always takes its direct autograd path: its own row chunking would hold one more
        gradient buffer and re-enter autograd inside ours."""
        block_rows = max(1, chunked.DIRECT_MAX_ELEMENTS // self.vocab)
        labels = None if self.labels is None else self.labels.index_select(0, rows)
        teacher = self.teacher
        if isinstance(teacher, TopK):
            teacher = TopK(teacher.indices.index_select(0, rows), teacher.logprobs.index_select(0, rows))  # fmt: skip
        elif teacher is not None:
            teacher = teacher.index_select(0, rows)  # (c, V')
        needs_grad = any(self.wants)
        ce_total, kd_total = logits.new_zeros(()), logits.new_zeros(())
        for start in range(0, logits.shape[0], block_rows):
            block = slice(start, start + block_rows)
            student = logits[block].detach().requires_grad_(needs_grad)  # (b, V')
            terms = []  # the weighted terms that carry a gradient
            if self.sparse_support:
                ce, kd = self._support_terms(student, teacher, labels, block, needs_grad)
                with torch.set_grad_enabled(needs_grad):
                    if ce is not None:
                        terms += [self.ce_weight * ce] if ce.requires_grad else []
                        ce_total += ce.detach()
                    terms += [self.kd_weight * kd] if kd.requires_grad else []
                kd_total += kd.detach()
            elif labels is not None:
                with torch.set_grad_enabled(needs_grad and self.ce_weight != 0):
                    ce = F.cross_entropy(student, labels[block], reduction="sum")
                    terms += [self.ce_weight * ce] if ce.requires_grad else []
                ce_total += ce.detach()
            if teacher is not None and not self.sparse_support:
                with torch.set_grad_enabled(needs_grad and self.kd_weight != 0):
                    kd = self._kd(student, teacher, labels, block)
                    terms += [self.kd_weight * kd] if kd.requires_grad else []
                kd_total += kd.detach()
            if not needs_grad:
                continue
            if terms:
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad(sum(terms) * scale, student)
                logits[block] = grad
            else:  # every term has weight 0
                logits[block] = 0.0
        return ce_total, kd_total

    def _support_terms(
        self, student: Tensor, teacher: TopK, labels: Tensor | None, block: slice, needs_grad: bool
    ) -> tuple[Tensor | None, Tensor]:
        """CE and a distribution loss to a top-k teacher from the gathered logits alone.

        A distribution loss to a top-k teacher reads the student only on the teacher's support:
        renormalised there (nothing else needed), or with the rest as one bucket (then also the
        full normaliser, which the cross-entropy computes anyway). So the loss is called on a
        ``(b, k)`` / ``(b, k + 1)`` stand-in for the student — its logits on the support, or its
        normalised log-probabilities on the support plus the tail bucket — with the support
        renumbered 0…k−1; the value and the gradients are the catalogue loss's own, and the
        whole block costs one log-softmax over the vocabulary instead of two.
        """
        indices, teacher_lp = teacher.indices[block], teacher.logprobs[block]
        tail = self.options.get("tail", "renormalize")
        with torch.set_grad_enabled(needs_grad):
            wanted = indices if labels is None else torch.cat([labels[block, None], indices], -1)
            # One fused log-softmax (a single kernel, unlike logsumexp's several passes) when
            # CE or the tail bucket needs the normaliser; else the raw logits suffice.
            if labels is not None or tail == "residual":
                picked = torch.log_softmax(student, dim=-1).gather(-1, wanted)
            else:
                picked = student.gather(-1, wanted)
            support = picked if labels is None else picked[:, 1:]
            ce = None if labels is None else -picked[:, 0].sum()
            if tail == "residual":
                if self.options.get("temperature", 1.0) != 1.0:
                    raise ValueError("tail='residual' needs temperature=1")
                support = torch.cat([support, log_residual(support)], dim=-1)
            renumbered = torch.arange(indices.shape[-1], device=indices.device).expand_as(indices)
            kd = self.loss_function(
                support, TopK(renumbered, teacher_lp), reduction="sum", **self.options
            )
        if ce is not None and not (needs_grad and self.ce_weight != 0):
            ce = ce.detach()
        if not (needs_grad and self.kd_weight != 0):
            kd = kd.detach()
        return ce, kd

    def _kd(self, student: Tensor, teacher: Tensor | TopK, labels: Tensor | None, block: slice) -> Tensor:  # fmt: skip
        """The catalogue loss summed over one block of rows."""
        if isinstance(teacher, TopK):
            teacher_block: Tensor | TopK = TopK(teacher.indices[block], teacher.logprobs[block])
        else:
            teacher_block = teacher[block]
        options = {**self.options, "labels": labels[block]} if self.reads_labels else self.options
        return self.loss_function(student, teacher_block, reduction="sum", **options)


class _PrecomputedGradients(torch.autograd.Function):
    """A scalar whose input gradients were computed in forward; backward rescales them."""

    @staticmethod
    def forward(ctx, value: Tensor, grads: tuple, *inputs: Tensor | None) -> Tensor:
        ctx.present = [g is not None for g in grads]
        ctx.save_for_backward(*[g for g in grads if g is not None])
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        # The upstream gradient is usually exactly 1 (``loss.backward()``): the stored
        # gradients are then handed over as they are, and autograd adopts them as ``.grad``
        # without a copy (it copies them itself when the graph is retained). Anything else
        # costs one scaled copy. (The check is one host sync per backward on a GPU.)
        saved = iter(ctx.saved_tensors)
        unit = bool(grad_output == 1)
        grads = []
        for present in ctx.present:
            grad = next(saved) if present else None
            if grad is not None and not unit:
                grad = grad * grad_output.to(grad.dtype)
            grads.append(grad)
        return (None, None, *grads)
