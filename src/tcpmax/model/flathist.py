"""A flat log-linear latency histogram for the hot loops, turned into an HdrHistogram at the end.

`HdrHistogram.record_value` is four Python calls per value (0.76 us measured against 0.27 us
for the inline form below, docs/benchmarks.md); a worker records one value per connection.
The hot loop instead increments one counter of a flat array, at an index it computes inline:

    b = v.bit_length()
    counts[v if b <= SUB_BITS else ((b - SUB_BITS) << SUB_BITS)
           | ((v >> (b - SUB_BITS - 1)) & SUB_MASK)] += 1

Values below 2**SUB_BITS get a counter each; above, each power of two is split into
2**SUB_BITS equal buckets, so a value is known within 1/256 of itself (0.4%). `to_hdr` records
each bucket's middle into the HdrHistogram the results already carry, so what is reported
(percentiles, merging across workers) is unchanged, within that 0.4%.
"""

from __future__ import annotations

from array import array

from hdrh.histogram import HdrHistogram

__all__ = ["SUB_BITS", "SUB_MASK", "bucket_bounds", "flat_counts", "flat_index", "record", "to_hdr"]

SUB_BITS = 8
SUB_MASK = (1 << SUB_BITS) - 1
_SIZE = (64 - SUB_BITS + 1) << SUB_BITS     # every index of a value below 2**64


def flat_counts() -> array[int]:
    """A zeroed counter array that holds every index `flat_index` gives."""
    return array("Q", bytes(8 * _SIZE))


def flat_index(v: int) -> int:
    """The counter of value `v` (>= 0), the same as the inline form in the module docstring."""
    b = v.bit_length()
    return v if b <= SUB_BITS else ((b - SUB_BITS) << SUB_BITS) | ((v >> (b - SUB_BITS - 1))
                                                                    & SUB_MASK)


def record(counts: array[int], v: int) -> None:
    """Count `v` (for the paths off the hot loop)."""
    counts[flat_index(v)] += 1


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value counted at `index`."""
    if index < 1 << (SUB_BITS + 1):
        return index, index
    b = (index >> SUB_BITS) + SUB_BITS          # the bit length of the bucket's values
    low = ((1 << SUB_BITS) | (index & SUB_MASK)) << (b - SUB_BITS - 1)
    return low, low + (1 << (b - SUB_BITS - 1)) - 1


def to_hdr(counts: array[int], hist: HdrHistogram) -> HdrHistogram:
    """Add every counted value to `hist` (at its bucket's middle) and return it."""
    for index, n in enumerate(counts):
        if n:
            low, high = bucket_bounds(index)
            hist.record_value(max(1, (low + high) // 2), n)
    return hist
