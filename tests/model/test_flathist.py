"""The flat histogram of the hot loops: every value lands in a bucket that contains it, the
buckets are narrow (0.4%), and the HdrHistogram made from it reports the same percentiles."""

import random

from tcpmax.engine.load_worker import new_histogram
from tcpmax.model.flathist import (
    SUB_BITS,
    SUB_MASK,
    bucket_bounds,
    flat_counts,
    flat_index,
    record,
    to_hdr,
)

_EDGES = [0, 1, 255, 256, 511, 512, 513, 1023, 1024, 3_600_000_000, 2**63 - 1]


def _values():
    rng = random.Random(7)
    return _EDGES + [rng.randrange(1, 2**40) for _ in range(2000)]


def test_every_value_lands_in_a_bucket_that_contains_it():
    for v in _values():
        low, high = bucket_bounds(flat_index(v))
        assert low <= v <= high, v


def test_a_bucket_is_at_most_a_256th_of_its_values_wide():
    for v in _values():
        low, high = bucket_bounds(flat_index(v))
        assert high - low <= max(0, low // 256), v


def test_indexes_rise_with_values_and_fit_the_array():
    counts = flat_counts()
    indexes = [flat_index(v) for v in sorted(_values())]
    assert indexes == sorted(indexes)
    assert indexes[-1] < len(counts)


def test_the_inline_form_of_the_hot_loop_gives_the_same_index():
    for v in _values():
        b = v.bit_length()
        inline = v if b <= SUB_BITS else ((b - SUB_BITS) << SUB_BITS) | (
            (v >> (b - SUB_BITS - 1)) & SUB_MASK)
        assert inline == flat_index(v)


def test_the_hdr_histogram_made_from_it_reports_the_percentiles_within_half_a_percent():
    rng = random.Random(11)
    values = [int(rng.lognormvariate(12, 1.2)) + 1 for _ in range(20_000)]
    counts = flat_counts()
    exact = new_histogram()
    for v in values:
        record(counts, v)
        exact.record_value(v)
    flat = to_hdr(counts, new_histogram())
    assert flat.get_total_count() == len(values)
    for q in (50, 90, 99, 99.9):
        want = exact.get_value_at_percentile(q)
        assert abs(flat.get_value_at_percentile(q) - want) <= 0.005 * want, q
