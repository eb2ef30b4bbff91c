"""Codecs: a batch of tokens' top-k teacher outputs ⇄ fixed-size byte records.

An offline teacher cache keeps, for every token of a corpus, the teacher's top-k
log-probabilities at T = 1 and their token ids. A codec turns N tokens of that — log-probs
(N, k) and ids (N, k) in ``[0, vocab_size)`` — into a uint8 array (N, ``record_bytes``) and
back. Records have one size for a given (codec, k, vocab_size), so a shard is a plain
(tokens × record_bytes) array that can be memory-mapped and sliced by token; decoding reads
such a slice without writing to it and is vectorised over tokens.

* ``plain`` — fp16 log-probs then int32 ids, little-endian: 6·k bytes, ids exact.
* ``compact`` — Elias–Fano ids, 7-bit power-companded probability ratios and an 8-bit
  top-k mass: 149 bytes at k = 64 over SmolLM2's 49,152-token vocabulary (``plain`` needs
  384), with a KL to the original top-k of ~5e-5 nats per token, far below what
  distillation can notice (see :class:`CompactCodec`).

Encoding and decoding live here, and so does checking what comes in: shapes, dtypes, id
ranges, duplicate ids and record widths, with errors that name the array. Where records are
stored (shards, manifest, writer, reader) is not this file's business; the manifest records
a codec's ``name`` and ``params`` and :func:`get_codec` rebuilds it from them.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from distil.cache.bits import field_bits, ones_positions, pack_bit_rows, read_bits, read_fields
from distil.errors import ConfigError, DataError, ShapeError, UnknownNameError
from distil.registry import Registry, did_you_mean

#: Log-probabilities above this are not log-probabilities (logits, most likely). A little
#: above 0 is allowed: a bf16 teacher's log-softmax can round its top entry slightly past 0.
LOGPROB_SLACK = 0.1

#: Tokens encoded per step by ``compact``, so its 0/1 bit matrix stays ~10 MB whatever N is.
ENCODE_CHUNK = 8192

Array = np.ndarray | Tensor


class Codec(ABC):
    """Turns top-k (log-probs, ids) of N tokens into (N, ``record_bytes``) uint8 and back.

    Subclasses are frozen dataclasses whose fields are their parameters, so ``params`` is
    JSON-ready and ``get_codec(codec.name, **codec.params)`` rebuilds an equal codec.
    ``encode`` and ``decode`` check their inputs here, once; the ``_encode``/``_decode``
    of a subclass trust them.
    """

    name: ClassVar[str]

    @property
    def params(self) -> dict[str, Any]:
        """The codec's parameters, as a manifest records them."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @abstractmethod
    def record_bytes(self, k: int, vocab_size: int) -> int:
        """Bytes per token for top-``k`` over a ``vocab_size`` vocabulary."""

    def encode(self, logprobs: Array, ids: Array, vocab_size: int) -> np.ndarray:
        """Encode ``logprobs`` (N, k) float and ``ids`` (N, k) int into uint8 (N, record_bytes).

        Raises ``ShapeError`` for shapes that do not fit and ``DataError`` for bad values:
        NaN log-probs or ones above ``LOGPROB_SLACK`` (logits?), ids outside
        ``[0, vocab_size)`` or repeated within a token.
        """
        logprob_array, id_array = check_topk(logprobs, ids, vocab_size)
        record_bytes = self.record_bytes(id_array.shape[1], vocab_size)
        if len(id_array) == 0:
            return np.zeros((0, record_bytes), dtype=np.uint8)
        return self._encode(logprob_array, id_array, vocab_size)

    def decode(self, records: Array, k: int, vocab_size: int) -> tuple[Tensor, Tensor]:
        """Decode uint8 ``records`` (N, record_bytes) into log-probs (N, k) float32, ids (N, k) int64.

        ``records`` may be a read-only memory-mapped slice; it is never written. A width
        other than ``record_bytes(k, vocab_size)`` raises ``ShapeError`` (a truncated file,
        or records written with another codec, k or vocabulary).
        """
        check_sizes(k, vocab_size)
        if isinstance(records, Tensor):
            records = records.detach().cpu().numpy()
        if not isinstance(records, np.ndarray) or records.dtype != np.uint8:
            raise DataError(
                f"records must be a uint8 numpy array (N, record_bytes), got "
                f"{type(records).__name__} of {getattr(records, 'dtype', '?')}"
            )
        expected = self.record_bytes(k, vocab_size)
        if records.ndim != 2 or records.shape[1] != expected:
            raise ShapeError(
                f"records {tuple(records.shape)} must be (N, {expected}): codec {self!r} writes "
                f"{expected}-byte records for k={k}, vocab_size={vocab_size} (truncated data, "
                "or written with another codec, k or vocabulary?)"
            )
        logprobs, ids = self._decode(records, k, vocab_size)
        return torch.from_numpy(logprobs.astype(np.float32, copy=False)), torch.from_numpy(ids)

    @abstractmethod
    def _encode(self, logprobs: np.ndarray, ids: np.ndarray, vocab_size: int) -> np.ndarray:
        """Records for checked float64 ``logprobs`` and int64 ``ids`` (N ≥ 1, k)."""

    @abstractmethod
    def _decode(
        self, records: np.ndarray, k: int, vocab_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(log-probs (N, k) float, ids (N, k) int64) from records of the right width."""


CODECS: Registry[type[Codec]] = Registry("cache codec")


def get_codec(name: str, **params: Any) -> Codec:
    """The codec registered as ``name``, built with ``params`` (as a manifest recorded them).

    Unknown names and parameters raise ``ConfigError`` listing the valid ones.
    """
    try:
        codec_class = CODECS.get(name)
    except UnknownNameError as error:
        raise ConfigError(f"{error} (cache codecs: {', '.join(CODECS.names())})") from None
    valid = [field.name for field in dataclasses.fields(codec_class)]  # type: ignore[arg-type]
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"cache codec {name!r} has no parameter {key!r}"
                f"{did_you_mean(key, valid) if valid else '; it takes no parameters'}"
            )
    return codec_class(**params)


@CODECS.register("plain")
@dataclasses.dataclass(frozen=True)
class PlainCodec(Codec):
    """fp16 log-probs then int32 ids, little-endian: 6·k bytes per token.

    The reference point: ids are exact and log-probs only rounded to fp16 (a relative error
    in p of at most 2⁻¹¹·|log p|, e.g. 0.5 % at p = e⁻¹⁰). Order within a token is kept.
    The tail ``1 − Σp`` is not stored, only implied, so the rounding of the top entries
    moves it: Σp can come back up to ~3e-4 above 1, and a confident token's smaller tail
    is then lost (≈3e-3 nats for a ``tail="residual"`` loss on such a token).
    """

    name: ClassVar[str] = "plain"

    def record_bytes(self, k: int, vocab_size: int) -> int:
        """6·k: two bytes per log-prob, four per id."""
        check_sizes(k, vocab_size)
        if vocab_size > 2**31:
            raise ConfigError(f"codec 'plain' stores int32 ids; vocab_size={vocab_size} is too big")
        return 6 * k

    def _encode(self, logprobs: np.ndarray, ids: np.ndarray, vocab_size: int) -> np.ndarray:
        rows, k = ids.shape
        records = np.empty((rows, 6 * k), dtype=np.uint8)
        records[:, : 2 * k] = logprobs.astype("<f2").view(np.uint8).reshape(rows, 2 * k)
        records[:, 2 * k :] = ids.astype("<i4").view(np.uint8).reshape(rows, 4 * k)
        return records

    def _decode(
        self, records: np.ndarray, k: int, vocab_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        logprobs = np.ascontiguousarray(records[:, : 2 * k]).view("<f2")
        ids = np.ascontiguousarray(records[:, 2 * k :]).view("<i4").astype(np.int64)
        check_decoded_ids(ids, vocab_size, self)
        return logprobs, ids


@CODECS.register("compact")
@dataclasses.dataclass(frozen=True)
class CompactCodec(Codec):
    """Elias–Fano ids, power-companded probability ratios and the top-k mass, fixed-size.

    **Ids.** The order of a top-k does not matter to a loss, so each token's ids are sorted
    ascending (log-probs carried along) and stored as a sorted set with Elias–Fano coding:
    each id is split into ``L = max(0, ⌊log2(V/k)⌋)`` low bits, bit-packed as they are, and a
    high part ``id >> L`` written in unary as a bitmap of ``k + ((V − 1) >> L) + 1`` bits
    whose i-th one sits at ``high_i + i``. That costs at most ``2 + log2(V/k)`` bits per id,
    about 5 % above the ``log2 C(V, k)`` bits any code for a k-subset needs (736 against 701
    at V = 49,152, k = 64; int16 ids would take 1024), and, unlike a variable-length gap
    code, its size depends only on (V, k): records stay fixed-size and decoding is two
    vectorised steps (the positions of the ones, minus i).

    **Probabilities.** A token's top-k is split into its shape, the ratios
    ``r_i = p_i / max_j p_j`` in (0, 1], and its mass ``S = Σ p_i`` (the tail is 1 − S).
    Each ratio is stored as ``code = round(M·r^(1/γ))``, ``M = 2**code_bits − 1``, and
    decoded as ``(code/M)^γ``. The loss that matters is the KL from the stored top-k to the
    original; a rounding error ``e`` on q costs about ``e²/(2q)``, so with ``u = c(r)``
    quantised uniformly the expected cost of an entry is ``∝ 1 / (r·c'(r)²)``. Over values
    spread evenly in log r (as an LM's top-k roughly is) the compander that minimises the
    total is ``c(r) = r^(1/3)``, hence γ = 3: fine steps where the mass is, coarse ones far
    down, an expected renormalised KL of ``γ²/(24·M²)·Σ r_i^(1−2/γ) / Σ r_i`` (≈ 2.3e-5 times
    that ratio of sums). Linear codes waste steps on the top entries; log codes spend too
    many on the far tail. Code 0 (r below ``(1/(2M))^γ``, 6e-8 at the defaults) decodes to
    half that bin edge: a finite floor, never −inf.

    Ratios rather than probabilities make the error independent of how much mass the top-k
    holds: coding p itself left flat tokens (top-64 mass of a few per cent, every p ~1e-4)
    with 50–100 % steps, up to 7e-3 nats of renormalised KL. The mass gets its own code,
    companded from both ends, ``S ≤ ½: ½(2S)^(1/γ)``, ``S > ½: 1 − ½(2(1 − S))^(1/γ)``,
    because the binary KL between (S, 1 − S) and its copy needs relative precision on the
    smaller side: on S for flat tokens, on the tail for confident ones. Letting the tail be
    whatever the k rounded entries leave loses it (tokens with a 0.2–0.8 % tail came back
    with none: 0.02–0.17 nats each for a ``tail="residual"`` loss). Decoding scales the
    ratios to sum to the decoded S, so Σp ≤ 1 always and ``1 − Σp`` is the stored tail.
    The mass code has one bit more than the ratios, so each half of its range (S ≤ ½, S > ½)
    gets the ratios' precision.

    **Budget.** At V = 49,152, k = 64: low bits 64·9 + bitmap 64 + 96 + ratios 64·7 + mass 8
    = 1192 bits = 149 bytes per token (``plain``: 384). Layout: one bit string, low bits,
    bitmap, k ratio codes in id order, the mass code, zero padding to a whole byte.
    """

    name: ClassVar[str] = "compact"
    gamma: float = 3.0
    code_bits: int = 7

    def __post_init__(self) -> None:
        if not (isinstance(self.gamma, int | float) and math.isfinite(self.gamma)):
            raise ConfigError(f"codec 'compact': gamma must be a finite number, got {self.gamma!r}")
        if not 1.0 <= self.gamma <= 16.0:
            raise ConfigError(f"codec 'compact': gamma must be in [1, 16], got {self.gamma}")
        if not (isinstance(self.code_bits, int) and 2 <= self.code_bits <= 16):
            raise ConfigError(
                f"codec 'compact': code_bits must be an integer in [2, 16], got {self.code_bits!r}"
            )
        object.__setattr__(self, "gamma", float(self.gamma))  # JSON shows 3.0 either way

    @property
    def levels(self) -> int:
        """M, the largest ratio code; code M decodes to r = 1 (the token's top entry)."""
        return 2**self.code_bits - 1

    @property
    def mass_levels(self) -> int:
        """The largest mass code (one bit more than the ratios); it decodes to S = 1."""
        return 2 ** (self.code_bits + 1) - 1

    def record_bytes(self, k: int, vocab_size: int) -> int:
        """Whole bytes for k·L low bits, the ``k + ((V−1) >> L) + 1``-bit bitmap and the codes."""
        low, bitmap = elias_fano_bits(k, vocab_size)
        return (k * low + bitmap + k * self.code_bits + self.code_bits + 1 + 7) // 8

    def ratio_table(self) -> np.ndarray:
        """log r for every ratio code (float64, M + 1 entries); code 0 is the finite floor."""
        codes = np.arange(1, self.levels + 1, dtype=np.float64)
        floor = math.log(0.5) + self.gamma * math.log(0.5 / self.levels)
        return np.concatenate([[floor], self.gamma * (np.log(codes) - math.log(self.levels))])

    def mass_table(self) -> np.ndarray:
        """log S for every mass code (float64); code 0 is half its bin edge, never −inf."""
        u = np.arange(self.mass_levels + 1, dtype=np.float64) / self.mass_levels
        low_side = 0.5 * (2 * u) ** self.gamma
        high_side = 1.0 - 0.5 * (2 * (1 - u)) ** self.gamma
        mass = np.where(u <= 0.5, low_side, high_side)
        mass[0] = 0.25 * (1.0 / self.mass_levels) ** self.gamma
        return np.log(mass)

    def _encode(self, logprobs: np.ndarray, ids: np.ndarray, vocab_size: int) -> np.ndarray:
        rows, k = ids.shape
        low_bits, bitmap_bits = elias_fano_bits(k, vocab_size)
        record_bytes = self.record_bytes(k, vocab_size)
        slots = np.arange(k)
        records = np.empty((rows, record_bytes), dtype=np.uint8)
        for start in range(0, rows, ENCODE_CHUNK):
            chunk = slice(start, start + ENCODE_CHUNK)
            order = np.argsort(ids[chunk], axis=1)
            sorted_ids = np.take_along_axis(ids[chunk], order, axis=1)  # (n, k) ascending
            sorted_logprobs = np.take_along_axis(logprobs[chunk], order, axis=1).clip(max=0.0)
            top = sorted_logprobs.max(axis=1, keepdims=True)  # (n, 1)
            top[np.isneginf(top)] = 0.0  # a token of zeros: ratios 0, mass 0
            companded = np.exp((sorted_logprobs - top) / self.gamma)  # r^(1/γ), in [0, 1]
            ratio_codes = np.rint(self.levels * companded).astype(np.int64)
            mass = (np.exp(sorted_logprobs - top).sum(axis=1) * np.exp(top[:, 0])).clip(0, 1)
            mass_companded = np.where(
                mass <= 0.5,
                0.5 * (2 * mass) ** (1 / self.gamma),
                1 - 0.5 * (2 * (1 - mass)) ** (1 / self.gamma),
            )
            mass_codes = np.rint(self.mass_levels * mass_companded).astype(np.int64)
            bitmap = np.zeros((len(sorted_ids), bitmap_bits), dtype=np.uint8)
            np.put_along_axis(bitmap, (sorted_ids >> low_bits) + slots, 1, axis=1)
            bit_rows = np.concatenate(
                [
                    field_bits(sorted_ids & ((1 << low_bits) - 1), low_bits),
                    bitmap,
                    field_bits(ratio_codes, self.code_bits),
                    field_bits(mass_codes[:, None], self.code_bits + 1),
                ],
                axis=1,
            )
            records[chunk] = pack_bit_rows(bit_rows, record_bytes)
        return records

    def _decode(
        self, records: np.ndarray, k: int, vocab_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        low_bits, bitmap_bits = elias_fano_bits(k, vocab_size)
        low = read_fields(records, 0, low_bits, k)  # (N, k)
        bitmap = read_bits(records, k * low_bits, bitmap_bits)  # (N, bitmap_bits) 0/1
        positions = ones_positions(bitmap, k)  # (N, k): where high_i + i was set
        if positions is None:
            ones_per_token = np.count_nonzero(bitmap, axis=1)
            token = int(np.flatnonzero(ones_per_token != k)[0])
            raise DataError(
                f"corrupted 'compact' record {token}: its id bitmap holds "
                f"{ones_per_token[token]} ids, expected k={k}"
            )
        high = positions - np.arange(k)
        ids = (high << low_bits) | low.astype(np.int64)  # low may be uint64: no mixing
        check_decoded_ids(ids, vocab_size, self)

        codes_at = k * low_bits + bitmap_bits
        ratio_codes = read_fields(records, codes_at, self.code_bits, k)  # (N, k)
        mass_codes = read_fields(records, codes_at + k * self.code_bits, self.code_bits + 1, 1)
        ratio_table = self.ratio_table()
        ratio_sum = np.exp(ratio_table).take(ratio_codes).sum(axis=1, keepdims=True)  # (N, 1)
        scale = self.mass_table().take(mass_codes) - np.log(ratio_sum)  # log(S / Σ r)
        logprobs = ratio_table.astype(np.float32).take(ratio_codes)  # (N, k)
        logprobs += scale.astype(np.float32)  # now summing to the decoded S
        return logprobs, ids


def elias_fano_bits(k: int, vocab_size: int) -> tuple[int, int]:
    """(L, bitmap bits) of Elias–Fano for k distinct ids below ``vocab_size``.

    ``L = max(0, ⌊log2(V/k)⌋)`` low bits per id (the choice that minimises the total), and a
    unary bitmap of the high parts with ``k`` ones and ``((V − 1) >> L) + 1`` zeros.
    """
    check_sizes(k, vocab_size)
    low = max(0, (vocab_size // k).bit_length() - 1)  # ⌊log2(V/k)⌋ in exact integers
    return low, k + ((vocab_size - 1) >> low) + 1


def check_sizes(k: int, vocab_size: int) -> None:
    """``vocab_size`` ≥ 1 and 1 ≤ k ≤ ``vocab_size``, or a clear error."""
    if not isinstance(vocab_size, int | np.integer) or vocab_size < 1:
        raise ConfigError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if not isinstance(k, int | np.integer) or not 1 <= k <= vocab_size:
        raise ShapeError(f"top-k width k={k!r} must be in [1, vocab_size={vocab_size}]")


def check_topk(logprobs: Array, ids: Array, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Check a top-k batch where it enters a cache; return float64 log-probs, int64 ids (N, k).

    ``logprobs`` must be floating point, ``ids`` integer, both (N, k) with 1 ≤ k ≤ vocab_size;
    log-probs not NaN and at most ``LOGPROB_SLACK`` (they are log-probabilities at T = 1, not
    logits); ids in ``[0, vocab_size)`` and distinct within each token, as a top-k's are.
    """
    logprob_array = _as_numpy(logprobs, "logprobs")
    id_array = _as_numpy(ids, "ids")
    if not np.issubdtype(logprob_array.dtype, np.floating):
        raise DataError(f"logprobs must be floating point, got {logprob_array.dtype}")
    if not np.issubdtype(id_array.dtype, np.integer):
        raise DataError(f"ids must be integers, got {id_array.dtype}")
    if logprob_array.ndim != 2 or logprob_array.shape != id_array.shape:
        raise ShapeError(
            f"logprobs {tuple(logprob_array.shape)} and ids {tuple(id_array.shape)} must both "
            "be (N, k): one row of top-k per token"
        )
    check_sizes(id_array.shape[1], vocab_size)
    if np.isnan(logprob_array).any():
        token = int(np.flatnonzero(np.isnan(logprob_array).any(axis=1))[0])
        raise DataError(f"logprobs of token {token} contain NaN")
    if logprob_array.size and logprob_array.max() > LOGPROB_SLACK:
        raise DataError(
            f"logprobs reach {float(logprob_array.max()):.3g} > 0: a cache stores "
            "log-probabilities at T = 1 (log_softmax of the logits), not logits"
        )
    bad = (id_array < 0) | (id_array >= vocab_size)
    if bad.any():
        token, slot = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(
            f"ids must lie in [0, vocab_size={vocab_size}); token {token} has id "
            f"{int(id_array[token, slot])} (vocabulary mismatch?)"
        )
    repeated = (np.diff(np.sort(id_array, axis=1), axis=1) == 0).any(axis=1)
    if repeated.any():
        token = int(np.flatnonzero(repeated)[0])
        raise DataError(
            f"ids of token {token} repeat a value ({sorted(id_array[token].tolist())[:8]}…): "
            "a top-k holds k distinct ids"
        )
    return logprob_array.astype(np.float64), id_array.astype(np.int64)


def check_decoded_ids(ids: np.ndarray, vocab_size: int, codec: Codec) -> None:
    """Ids read back from records lie in ``[0, vocab_size)``; otherwise the records are corrupt."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise DataError(
            f"records decoded by {codec!r} hold ids in [{ids.min()}, {ids.max()}], outside "
            f"[0, vocab_size={vocab_size}): corrupted data, or another vocabulary?"
        )


def _as_numpy(array: Array, name: str) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.detach().cpu()
        if array.dtype in (torch.bfloat16, torch.float16):
            array = array.float()
        return array.numpy()
    if isinstance(array, np.ndarray):
        return array
    raise DataError(f"{name} must be a torch.Tensor or numpy array, got {type(array).__name__}")
