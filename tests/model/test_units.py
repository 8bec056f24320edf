import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpmax.model.units import (
    UnitError,
    format_bytes,
    format_count,
    parse_count,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(("text", "value"), [
    ("1", 1), ("100000", 100_000), ("100_000", 100_000), ("1,000,000", 1_000_000),
    ("100k", 100_000), ("100K", 100_000), ("1M", 1_000_000), ("2.5M", 2_500_000),
    ("10M", 10_000_000), ("1G", 1_000_000_000), ("1e6", 1_000_000), (" 42 ", 42),
])
def test_count_reads_plain_numbers_and_decimal_suffixes(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["1Q", "", "M", "abc", "1.5", "1..2", "1MB"])
def test_count_rejects_what_is_not_a_whole_count(text):
    with pytest.raises(UnitError, match="not a"):
        parse_count(text)


def test_count_rejects_negative_with_its_own_message():
    with pytest.raises(UnitError, match="negative"):
        parse_count("-5")


def test_count_rejects_zero_unless_allowed():
    with pytest.raises(UnitError, match="zero"):
        parse_count("0")
    assert parse_count("0", allow_zero=True) == 0


@given(st.integers(min_value=1, max_value=10**12))
def test_count_round_trips_any_formatted_count(n):
    assert parse_count(format_count(n)) == n


@pytest.mark.parametrize(("text", "value"), [
    ("4096", 4096), ("64GiB", 64 * 2**30), ("64G", 64 * 2**30), ("64GB", 64 * 10**9),
    ("512MiB", 512 * 2**20), ("1.5KiB", 1536), ("1TiB", 2**40),
])
def test_size_reads_binary_and_decimal_units(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["64XB", "", "GiB", "-1G", "0"])
def test_size_rejects_unknown_units_and_non_positive(text):
    with pytest.raises(UnitError):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0),
    ("2.5s", 2.5),
])
def test_duration_reads_common_units(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 parsecs", "", "-3s", "0s"])
def test_duration_rejects_unknown_units_negative_and_zero(text):
    with pytest.raises(UnitError):
        parse_duration(text)


@pytest.mark.parametrize(("value", "text"), [
    (0, "0 B"), (1023, "1023 B"), (3481, "3.40 KiB"), (25 * 2**30, "25.00 GiB"),
    (None, "unknown"),
])
def test_bytes_are_formatted_in_binary_units(value, text):
    assert format_bytes(value) == text


@pytest.mark.parametrize("text", ["1e400", "9" * 400, "1e999", "2G"])
def test_count_refuses_what_exceeds_its_maximum_without_a_float(text):
    with pytest.raises(UnitError, match=r"too large: at most 1,000,000,000$"):
        parse_count(text, maximum=10**9)


def test_count_is_exact_where_a_float_would_round():
    assert parse_count("9007199254740993", maximum=10**16) == 9_007_199_254_740_993


def test_a_very_long_input_is_cut_in_the_message():
    with pytest.raises(UnitError) as exc:
        parse_count("9" * 400)
    assert len(str(exc.value)) < 120


@pytest.mark.parametrize("text", ["9" * 320, "2EiB", "1e3"])
def test_size_refuses_huge_or_unreadable_sizes(text):
    with pytest.raises(UnitError):
        parse_size(text, maximum=2**60)


@pytest.mark.parametrize("text", ["100000000000000000000", "367d", "9" * 80 + "h"])
def test_duration_refuses_what_exceeds_its_maximum(text):
    with pytest.raises(UnitError, match="too long: at most 366d"):
        parse_duration(text, maximum=366 * 86400)


def test_duration_reads_days():
    assert parse_duration("2d") == 172_800.0
