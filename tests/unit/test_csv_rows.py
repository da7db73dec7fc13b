"""A CSV row with fewer fields than its header is refused by the reader (tasks/ingest.py), not padded."""

from __future__ import annotations

import pytest

from tasks.ingest import BatchReadError, parse_batch, short_rows


def test_a_file_cut_inside_its_last_row_is_named_truncated() -> None:
    with pytest.raises(BatchReadError, match=r"x\.csv: truncated: the last row \(line 3\) has 2 of 3 fields"):
        parse_batch("x.csv", b"a,b,c\n1,2,3\n4,5")


def test_a_short_row_anywhere_is_malformed_and_counted() -> None:
    problem = short_rows(b"a,b,c\n1,2\n4,5,6\n7\n")
    assert problem == "malformed CSV: 2 row(s) with fewer fields than the header's 3, the first on line 2"


@pytest.mark.parametrize(
    "data",
    [
        b"a,b,c\n1,2,3\n4,5,6",  # no newline at the end, but the last row is whole (RFC 4180 allows it)
        b"a,b,c\n1,2,3\n\n4,5,6\n",  # a blank line is skipped, as pandas skips it
        b'a,b,c\n1,"two\nlines",3\n',  # a quoted newline is inside a field, not a row's end
        b"a,b,c\n1,2,3,4\n",  # too many fields is pandas' own error, raised before this check
    ],
)
def test_whole_rows_pass(data: bytes) -> None:
    assert short_rows(data) is None
