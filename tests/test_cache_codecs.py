"""Cache codecs: exact id round-trips, log-prob error bounds, record sizes and boundary errors.

References are independent of the code under test: bit strings built from Python integers,
Elias–Fano sizes from ``math.log2``, fp16 rounding from torch, KL computed in float64 from
dense LM-like softmaxes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from distil.cache.bits import field_bits, pack_bit_rows, read_bits, read_fields
from distil.cache.codecs import CODECS, CompactCodec, get_codec
from distil.errors import ConfigError, DataError, ShapeError

SMOLLM2_VOCAB = 49_152
CODEC_NAMES = ["plain", "compact"]


def random_topk(
    rng: np.random.Generator, tokens: int, k: int, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids per token (always including 0 and vocab_size − 1 when k ≥ 2) and log-probs."""
    ids = np.empty((tokens, k), dtype=np.int64)
    for token in range(tokens):
        chosen = rng.choice(vocab_size, size=k, replace=False)
        if k >= 2 and vocab_size > k:
            others = chosen[(chosen != 0) & (chosen != vocab_size - 1)][: k - 2]
            chosen = np.concatenate([[0, vocab_size - 1], others])
        ids[token] = rng.permutation(chosen)
    probs = rng.dirichlet(np.full(k + 1, 0.3), size=tokens)[:, :k]  # leaves a tail
    return np.log(np.maximum(probs, 1e-30)).astype(np.float32), ids


def lm_like_topk(tokens: int, k: int, vocab_size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Top-k of softmaxes that look like an LM's: Zipf-ish logits, noise, varied sharpness.

    A tenth of the tokens are near-certain (top probability above 0.999), where the tail is
    a small difference of large numbers; the flattest hold a few per cent in their top-k.
    """
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, vocab_size + 1, dtype=torch.float32)
    slope = torch.empty(tokens, 1).uniform_(0.6, 2.5, generator=generator)
    logits = -slope * ranks.log() + torch.randn(tokens, vocab_size, generator=generator)
    logits = logits * torch.empty(tokens, 1).uniform_(0.5, 4.0, generator=generator)
    logits[: tokens // 10, 0] += 40.0  # near-certain tokens
    values, positions = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
    shuffle = torch.randperm(vocab_size, generator=generator)  # top ids anywhere in the vocab
    return values, shuffle[positions]


def by_id(logprobs: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each token's entries sorted by id, so two encodings of one top-k line up."""
    order = np.argsort(ids, axis=1)
    return np.take_along_axis(logprobs, order, axis=1), np.take_along_axis(ids, order, axis=1)


# ---------------------------------------------------------------------------- bit packing


@pytest.mark.parametrize("width", [1, 3, 7, 8, 9, 13, 16, 17, 31, 33, 57])
@pytest.mark.parametrize("offset", [0, 5, 11])
def test_bit_fields_match_python_integer_bit_strings(width: int, offset: int) -> None:
    rng = np.random.default_rng(width * 100 + offset)
    rows, count = 4, 6
    values = rng.integers(0, 2**width, size=(rows, count), dtype=np.uint64).astype(np.int64)
    record_bytes = (offset + count * width + 7) // 8  # tight: the last windows run past it
    expected = np.zeros((rows, record_bytes), dtype=np.uint8)
    for row in range(rows):
        bit_string = "0" * offset + "".join(format(int(v), f"0{width}b") for v in values[row])
        bit_string = bit_string.ljust(record_bytes * 8, "0")
        expected[row] = list(int(bit_string, 2).to_bytes(record_bytes, "big"))
    prefix = np.zeros((rows, offset), dtype=np.uint8)
    packed = pack_bit_rows(np.concatenate([prefix, field_bits(values, width)], 1), record_bytes)
    np.testing.assert_array_equal(packed, expected)
    np.testing.assert_array_equal(read_fields(expected, offset, width, count), values)
    bits = read_bits(expected, offset, count * width)
    np.testing.assert_array_equal(bits, field_bits(values, width))


# ---------------------------------------------------------------------------- sizes


def reference_compact_bytes(k: int, vocab_size: int, code_bits: int = 7) -> int:
    low = max(0, math.floor(math.log2(vocab_size / k)))
    ids = k * low + k + ((vocab_size - 1) >> low) + 1
    bits = ids + k * code_bits + code_bits + 1  # k ratio codes, one mass code
    return math.ceil(bits / 8)


def test_record_bytes_hit_the_budget() -> None:
    assert get_codec("compact").record_bytes(64, SMOLLM2_VOCAB) == 149
    assert get_codec("plain").record_bytes(64, SMOLLM2_VOCAB) == 384
    for k in (1, 8, 32, 64, 128, 1000):
        for vocab_size in (1000, 32_000, SMOLLM2_VOCAB, 50_257, 151_936):
            assert get_codec("compact").record_bytes(k, vocab_size) == reference_compact_bytes(
                k, vocab_size
            )
            assert get_codec("plain").record_bytes(k, vocab_size) == 6 * k
    assert get_codec("compact", code_bits=8).record_bytes(64, SMOLLM2_VOCAB) == 158


# ---------------------------------------------------------------------------- id round trips


@pytest.mark.parametrize("name", CODEC_NAMES)
@pytest.mark.parametrize(
    ("vocab_size", "k"),
    [(1, 1), (2, 1), (2, 2), (3, 3), (7, 3), (1000, 1), (1000, 1000), (1000, 999), (777, 5),
     (SMOLLM2_VOCAB, 64), (SMOLLM2_VOCAB, 128), (50_257, 8), (32_000, 100), (2**17 + 3, 1),
     (2**28 + 5, 2)],
)  # fmt: skip
def test_ids_round_trip_exactly(name: str, vocab_size: int, k: int) -> None:
    rng = np.random.default_rng(vocab_size + k)
    logprobs, ids = random_topk(rng, tokens=9, k=k, vocab_size=vocab_size)
    codec = get_codec(name)
    records = codec.encode(logprobs, ids, vocab_size)
    assert records.shape == (9, codec.record_bytes(k, vocab_size))
    assert records.dtype == np.uint8
    decoded_logprobs, decoded_ids = codec.decode(records, k, vocab_size)
    assert decoded_ids.dtype == torch.int64 and decoded_logprobs.dtype == torch.float32
    if name == "plain":  # order kept
        np.testing.assert_array_equal(decoded_ids.numpy(), ids)
    else:  # sorted ascending, carrying each id's probability along
        np.testing.assert_array_equal(decoded_ids.numpy(), np.sort(ids, axis=1))
        original_probs = np.exp(by_id(logprobs, ids)[0])
        decoded_probs = decoded_logprobs.exp().numpy()
        assert np.abs(decoded_probs - original_probs).max() < 0.02  # p paired with its id


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_property(data: st.DataObject) -> None:
    vocab_size = data.draw(st.integers(1, 3000), label="vocab_size")
    k = data.draw(st.integers(1, min(vocab_size, 40)), label="k")
    tokens = data.draw(st.integers(0, 4), label="tokens")
    rows = [
        data.draw(st.lists(st.integers(0, vocab_size - 1), min_size=k, max_size=k, unique=True))
        for _ in range(tokens)
    ]
    ids = np.array(rows, dtype=np.int64).reshape(tokens, k)
    probs = np.array(
        data.draw(st.lists(st.floats(0.0, 1.0), min_size=tokens * k, max_size=tokens * k))
    ).reshape(tokens, k)
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1.0)  # a top-k sums to ≤ 1
    with np.errstate(divide="ignore"):
        logprobs = np.log(probs)  # zeros become −inf, which both codecs must take
    for name in CODEC_NAMES:
        codec = get_codec(name)
        decoded_logprobs, decoded_ids = codec.decode(
            codec.encode(logprobs, ids, vocab_size), k, vocab_size
        )
        expected_ids = ids if name == "plain" else np.sort(ids, axis=1)
        np.testing.assert_array_equal(decoded_ids.numpy(), expected_ids)
        if name == "compact":
            assert torch.isfinite(decoded_logprobs).all()
            assert (decoded_logprobs.exp().sum(dim=1) <= 1 + 1e-5).all()


def test_plain_logprobs_are_fp16_rounding() -> None:
    logprobs, ids = lm_like_topk(tokens=64, k=32, vocab_size=5000)
    codec = get_codec("plain")
    decoded, decoded_ids = codec.decode(codec.encode(logprobs, ids, 5000), 32, 5000)
    torch.testing.assert_close(decoded, logprobs.half().float(), rtol=0, atol=0)
    torch.testing.assert_close(decoded_ids, ids, rtol=0, atol=0)


# ---------------------------------------------------------------------------- compact quality


def companding_bound(values: np.ndarray, gamma: float, levels: int) -> np.ndarray:
    """Worst relative error of v ↦ (round(M·v^(1/γ))/M)^γ for v in (0, 1].

    u = v^(1/γ) is rounded to a multiple of 1/M, so |û − u| ≤ 1/(2M), and v̂/v = (û/u)^γ
    lies within (1 ± 1/(2M·u))^γ; the upper side is the larger, and grows as v shrinks.
    """
    return (1 + 1 / (2 * levels * values ** (1 / gamma))) ** gamma - 1


@pytest.mark.parametrize(("gamma", "code_bits"), [(3.0, 7), (2.0, 7), (4.0, 8)])
def test_compact_ratios_stay_within_the_companding_bound(gamma: float, code_bits: int) -> None:
    # Each token holds a top entry p_max and an entry r·p_max; the codec stores r companded,
    # and the decoded ratio exp(logp̂ − logp̂_max) is r̂ whatever the decoded mass.
    codec = get_codec("compact", gamma=gamma, code_bits=code_bits)
    ratios = np.concatenate([np.geomspace(1e-5, 1.0, 20_000), np.linspace(0.01, 1.0, 5_000)])
    top = np.random.default_rng(3).uniform(0.3, 0.5, size=len(ratios))
    logprobs = np.stack([np.log(top), np.log(top * ratios)], axis=1)
    ids = np.tile(np.array([0, 1]), (len(ratios), 1))
    decoded, _ = codec.decode(codec.encode(logprobs, ids, 10), 2, 10)
    decoded = decoded.double().numpy()
    relative_error = np.abs(np.exp(decoded[:, 1] - decoded[:, 0]) / ratios - 1)
    bound = companding_bound(ratios, gamma, 2**code_bits - 1)
    assert (relative_error <= bound + 1e-5).all()
    assert relative_error.max() > 0.5 * bound.max()  # the bound is not vacuous
    if (gamma, code_bits) == (3.0, 7):
        assert relative_error[ratios >= 0.01].max() < 0.057
        assert relative_error[ratios >= 0.1].max() < 0.026


def test_compact_mass_keeps_relative_precision_on_its_smaller_side() -> None:
    # One entry per token: its ratio is 1, so the decoded p is the decoded mass S. The mass
    # is companded from both ends: S ≤ ½ is stored as u = ½(2S)^(1/γ), i.e. (2S)^(1/γ) on a
    # grid of M_mass/2 = 127.5 steps, the ratios' precision, bought by the extra bit; above ½
    # the tail 1 − S is stored the same way.
    codec = CompactCodec()
    mass = np.concatenate([np.geomspace(1e-6, 0.4, 10_000), 1 - np.geomspace(1e-6, 0.4, 10_000)])
    decoded, _ = codec.decode(
        codec.encode(np.log(mass)[:, None], np.zeros((len(mass), 1), int), 3), 1, 3
    )
    decoded_mass = np.exp(decoded.double().numpy()[:, 0])
    smaller = np.minimum(mass, 1 - mass)
    decoded_smaller = np.where(mass <= 0.5, decoded_mass, 1 - decoded_mass)
    bound = companding_bound(2 * smaller, codec.gamma, codec.mass_levels / 2)
    relative_error = np.abs(decoded_smaller / smaller - 1)
    assert (relative_error <= bound + 1e-5).all()
    assert relative_error.max() > 0.5 * bound.max()
    assert relative_error[smaller >= 1e-3].max() < 0.1


def test_compact_code_zero_decodes_to_a_finite_floor() -> None:
    codec = CompactCodec()
    logprobs = np.array([[-np.inf, -40.0, math.log(1e-9), 0.0]])
    decoded, _ = codec.decode(codec.encode(logprobs, np.array([[0, 1, 2, 3]]), 4), 4, 4)
    smallest_level = math.log((1 / codec.levels) ** codec.gamma)
    assert torch.isfinite(decoded).all()
    assert (decoded[0, :3] < smallest_level).all()
    assert abs(float(decoded[0, 3])) < 1e-6  # p = 1 stays 1, less the floors' share
    assert decoded.exp().sum() <= 1 + 1e-6


def kl_per_token(original: np.ndarray, decoded: np.ndarray, tail: bool) -> np.ndarray:
    """KL(original ‖ decoded) in float64 over the top-k (+ the tail bucket, or renormalised)."""
    p, q = np.exp(original.astype(np.float64)), np.exp(decoded.astype(np.float64))
    if tail:
        p = np.concatenate([p, np.maximum(1 - p.sum(1, keepdims=True), 1e-12)], axis=1)
        q = np.concatenate([q, np.maximum(1 - q.sum(1, keepdims=True), 1e-12)], axis=1)
    else:
        p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    return (p * (np.log(np.maximum(p, 1e-300)) - np.log(q))).sum(axis=1)


def test_compact_kl_to_the_original_top_k_is_negligible() -> None:
    k = 64
    logprobs, ids = lm_like_topk(tokens=400, k=k, vocab_size=SMOLLM2_VOCAB)
    codec = get_codec("compact")
    decoded, decoded_ids = codec.decode(
        codec.encode(logprobs, ids, SMOLLM2_VOCAB), k, SMOLLM2_VOCAB
    )
    original, original_ids = by_id(logprobs.numpy(), ids.numpy())
    np.testing.assert_array_equal(decoded_ids.numpy(), original_ids)
    decoded = decoded.numpy()
    with_tail = kl_per_token(original, decoded, tail=True)
    renormalised = kl_per_token(original, decoded, tail=False)
    assert with_tail.mean() < 2e-4 and with_tail.max() < 1e-3  # measured: 4.8e-5, 1.7e-4
    assert renormalised.mean() < 2e-4 and renormalised.max() < 1e-3  # 5.4e-5, 1.9e-4

    decoded_mass = np.exp(decoded.astype(np.float64)).sum(axis=1)
    original_mass = np.exp(original.astype(np.float64)).sum(axis=1)
    assert decoded_mass.max() <= 1 + 1e-6  # so 1 − Σp stays a tail mass
    assert np.abs(decoded_mass - original_mass).max() < 0.01
    assert original_mass.max() > 0.999  # near-certain tokens were there to test this
    assert original_mass.min() < 0.05  # and flat ones, whose every p is ~1e-3 or less


# ---------------------------------------------------------------------------- memory maps


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_decode_reads_a_read_only_memory_map(name: str, tmp_path) -> None:
    vocab_size, k = 1234, 16
    logprobs, ids = random_topk(np.random.default_rng(1), tokens=40, k=k, vocab_size=vocab_size)
    codec = get_codec(name)
    records = codec.encode(logprobs, ids, vocab_size)
    path = tmp_path / "shard.bin"
    records.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=records.shape)
    assert not mapped.flags.writeable
    piece_logprobs, piece_ids = codec.decode(mapped[7:29], k, vocab_size)
    whole_logprobs, whole_ids = codec.decode(records, k, vocab_size)
    torch.testing.assert_close(piece_logprobs, whole_logprobs[7:29], rtol=0, atol=0)
    torch.testing.assert_close(piece_ids, whole_ids[7:29], rtol=0, atol=0)
    np.testing.assert_array_equal(np.asarray(mapped), records)


# ---------------------------------------------------------------------------- registry


def test_get_codec_names_params_and_unknowns() -> None:
    assert set(CODEC_NAMES) <= set(CODECS.names())
    for name in CODEC_NAMES:
        codec = get_codec(name)
        assert codec.name == name
        assert get_codec(name, **json.loads(json.dumps(codec.params))) == codec
    assert get_codec("compact", gamma=2).params == {"gamma": 2.0, "code_bits": 7}
    with pytest.raises(ConfigError, match="compact"):
        get_codec("compat")
    with pytest.raises(ConfigError, match="compact, plain"):
        get_codec("zstd")
    with pytest.raises(ConfigError, match="did you mean 'gamma'"):
        get_codec("compact", gama=2)
    with pytest.raises(ConfigError, match="no parameter"):
        get_codec("plain", gamma=2)
    with pytest.raises(ConfigError, match="gamma"):
        get_codec("compact", gamma=0.5)
    with pytest.raises(ConfigError, match="code_bits"):
        get_codec("compact", code_bits=1)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_bad_inputs_raise_errors_that_name_the_culprit(name: str) -> None:
    codec = get_codec(name)
    logprobs, ids = random_topk(np.random.default_rng(2), tokens=3, k=4, vocab_size=100)
    duplicated = ids.copy()
    duplicated[1, 2] = duplicated[1, 0]
    with pytest.raises(DataError, match="token 1 repeat"):
        codec.encode(logprobs, duplicated, 100)
    out_of_range = ids.copy()
    out_of_range[2, 3] = 100
    with pytest.raises(DataError, match=r"token 2 has id 100"):
        codec.encode(logprobs, out_of_range, 100)
    with pytest.raises(DataError, match="token 0 has id -1"):
        codec.encode(logprobs, np.where(ids == ids[0, 0], -1, ids), 100)
    with pytest.raises(ShapeError, match=r"logprobs \(3, 3\) and ids \(3, 4\)"):
        codec.encode(logprobs[:, :3], ids, 100)
    with pytest.raises(ShapeError, match="k=4"):
        codec.encode(logprobs, ids, 3)
    with pytest.raises(DataError, match="not logits"):
        codec.encode(logprobs + 5.0, ids, 100)
    nan = logprobs.copy()
    nan[2, 1] = np.nan
    with pytest.raises(DataError, match="token 2 contain NaN"):
        codec.encode(nan, ids, 100)
    with pytest.raises(DataError, match="ids must be integers"):
        codec.encode(logprobs, ids.astype(np.float32), 100)
    with pytest.raises(ConfigError, match="vocab_size"):
        codec.encode(logprobs, ids, 0)

    records = codec.encode(torch.from_numpy(logprobs), torch.from_numpy(ids), 100)
    width = codec.record_bytes(4, 100)
    with pytest.raises(ShapeError, match=rf"must be \(N, {width}\).*k=4, vocab_size=100"):
        codec.decode(records[:, :-1], 4, 100)
    with pytest.raises(ShapeError, match="k=5"):
        codec.decode(records, 5, 100)  # another k means another width
    with pytest.raises(DataError, match="uint8"):
        codec.decode(records.astype(np.int16), 4, 100)


def test_compact_width_error_names_the_budget_and_corruption_is_caught() -> None:
    codec = get_codec("compact")
    logprobs, ids = lm_like_topk(tokens=5, k=64, vocab_size=SMOLLM2_VOCAB)
    records = codec.encode(logprobs, ids, SMOLLM2_VOCAB)
    with pytest.raises(ShapeError, match="149-byte records for k=64, vocab_size=49152"):
        codec.decode(records[:, :148], 64, SMOLLM2_VOCAB)
    corrupted = records.copy()
    corrupted[3, 72:92] = 0  # the id bitmap: bytes 72–91, after 64·9 low bits
    with pytest.raises(DataError, match="corrupted 'compact' record 3"):
        codec.decode(corrupted, 64, SMOLLM2_VOCAB)


def test_encode_leaves_its_inputs_alone() -> None:
    logprobs, ids = lm_like_topk(tokens=8, k=16, vocab_size=1000)
    before = (logprobs.clone(), ids.clone())
    get_codec("compact").encode(logprobs, ids, 1000)
    assert torch.equal(logprobs, before[0]) and torch.equal(ids, before[1])
