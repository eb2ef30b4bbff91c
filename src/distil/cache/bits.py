"""Bit packing for fixed-size cache records: unsigned fields in, bytes out, and back.

A record is one big-endian bit string (most significant bit first inside each byte, the
order of ``np.packbits``) holding fields of fixed widths at fixed bit offsets. Writing goes
through a 0/1 matrix and one ``np.packbits``; reading gathers, for every field at once, the
few bytes that can hold it and shifts the field out. Both are vectorised over records and
fields, so no Python code runs per token. The codecs (``codecs.py``) decide the layout; this
file knows nothing about log-probabilities or vocabularies.
"""

from __future__ import annotations

import numpy as np

#: Widest field :func:`read_fields` can read: the field plus up to 7 bits of offset into its
#: first byte must fit the 64-bit accumulator.
MAX_FIELD_BITS = 57


def field_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Spell each value of ``values`` (N, k), all below ``2**width``, as ``width`` bits.

    Returns a 0/1 uint8 matrix (N, k·width), each value most significant bit first, ready to
    be concatenated with other fields and handed to ``np.packbits(axis=1)``.
    """
    rows = values.shape[0]
    if width == 0:
        return np.zeros((rows, 0), dtype=np.uint8)
    size = next(size for size in (1, 2, 4, 8) if 8 * size >= width)
    big_endian = values.astype(f">u{size}")[..., None].view(np.uint8)  # (N, k, size)
    bits = np.unpackbits(big_endian, axis=-1)[..., 8 * size - width :]  # (N, k, width)
    return bits.reshape(rows, -1)


def pack_bit_rows(bit_rows: np.ndarray, record_bytes: int) -> np.ndarray:
    """Pack a 0/1 matrix (N, bits) into records (N, ``record_bytes``), zero padded at the end."""
    packed = np.packbits(bit_rows, axis=1)
    if packed.shape[1] > record_bytes:
        raise ValueError(f"{bit_rows.shape[1]} bits do not fit {record_bytes}-byte records")
    if packed.shape[1] < record_bytes:
        pad = np.zeros((packed.shape[0], record_bytes - packed.shape[1]), dtype=np.uint8)
        packed = np.concatenate([packed, pad], axis=1)
    return packed


def read_bits(records: np.ndarray, bit_offset: int, count: int) -> np.ndarray:
    """The ``count`` bits from ``bit_offset`` of every record (N, B) as a 0/1 uint8 (N, count)."""
    first_byte, skip = divmod(bit_offset, 8)
    last_byte = (bit_offset + count + 7) // 8
    bits = np.unpackbits(records[:, first_byte:last_byte], axis=1)  # never writes ``records``
    return bits[:, skip : skip + count]


def read_fields(records: np.ndarray, bit_offset: int, width: int, count: int) -> np.ndarray:
    """Read ``count`` consecutive ``width``-bit unsigned fields from each record.

    ``records`` is a uint8 array (N, B), possibly a read-only memory map; it is only read.
    Field ``j`` starts at bit ``bit_offset + j·width``. Returns unsigned ints (N, count):
    uint32 for fields up to 25 bits, uint64 above.

    Every field lies inside a window of ``ceil((width + 7) / 8)`` bytes starting at its first
    byte, so we gather that window for all fields at once (one ``take`` per window byte),
    glue the bytes into one integer and shift the field down. Window bytes past the end of
    the record only ever feed bits below the field, which the shift discards, so their index
    is clamped to the last byte.
    """
    rows, record_bytes = records.shape
    window = (width + 7 + 7) // 8
    word = np.uint32 if window <= 4 else np.uint64  # 32-bit arithmetic is ~2x faster
    if width == 0 or count == 0:
        return np.zeros((rows, count), dtype=word)
    if width > MAX_FIELD_BITS:
        raise ValueError(f"fields wider than {MAX_FIELD_BITS} bits are not supported: {width}")
    starts = bit_offset + np.arange(count, dtype=np.int64) * width  # (count,)
    first_byte = starts // 8
    fields = np.take(records, first_byte, axis=1).astype(word)  # (N, count)
    for step in range(1, window):
        fields <<= word(8)
        fields |= np.take(records, np.minimum(first_byte + step, record_bytes - 1), axis=1)
    fields >>= (window * 8 - (starts % 8) - width).astype(word)  # (count,) per-field shifts
    fields &= word((1 << width) - 1)
    return fields


def ones_positions(bits: np.ndarray, ones_per_row: int) -> np.ndarray | None:
    """Column of every 1 in a 0/1 uint8 matrix (N, W) that holds ``ones_per_row`` per row.

    Returns int64 (N, ``ones_per_row``), ascending within a row, or None when some row holds
    another number of ones (corrupt data). One ``flatnonzero`` over the whole matrix: its
    row-major order lists each row's ones in turn.
    """
    rows, width = bits.shape
    flat = np.flatnonzero(np.ascontiguousarray(bits).view(bool))
    if flat.size != rows * ones_per_row:
        return None
    flat = flat.reshape(rows, ones_per_row)
    row_starts = np.arange(rows, dtype=np.int64)[:, None] * width
    if rows and ((flat[:, 0] < row_starts[:, 0]) | (flat[:, -1] >= row_starts[:, 0] + width)).any():
        return None  # sorted and N·k in total, so first and last in their row ⇒ k in every row
    return flat - row_starts
