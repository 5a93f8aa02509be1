"""A command's output taken piece by piece: the head kept, the rest counted, every byte
written, secrets masked even when a piece boundary cuts one in two."""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisor.core.masking import MASK, Masker
from provisor.core.sizes import format_size, parse_size
from provisor.fleet.output import OutputFileError, OutputPolicy
from provisor.fleet.results import HostResult, Outcome

SECRET = "hunter2-s3cret"
masker = Masker.of(SECRET, "ab1")  # a long secret, and a short one masked standing alone

text = st.lists(
    st.sampled_from([SECRET, "ab1", "xab1", "ab1x", " ", "\n", "hunter2-", "s3cret", "abc", "é"]),
    max_size=40,
).map("".join)


@given(whole=text, cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12))
@settings(max_examples=300, deadline=None)
def test_a_stream_masks_as_the_whole_would_however_it_is_cut(whole: str, cuts: list[int]) -> None:
    data = whole.encode()
    stream = masker.stream()
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    masked = b"".join(stream.feed(data[a:b]) for a, b in itertools.pairwise(bounds))
    masked += stream.end()
    assert masked == masker.data(data)
    assert SECRET.encode() not in masked


@given(pieces=st.lists(st.binary(max_size=300), max_size=30), limit=st.integers(1, 2000))
@settings(max_examples=200, deadline=None)
def test_the_head_is_kept_and_the_rest_counted(pieces: list[bytes], limit: int) -> None:
    capture = OutputPolicy(max_output=limit).capture("web01", "stdout")
    for piece in pieces:
        capture.write(piece)
    capture.close()
    whole = b"".join(pieces)
    assert capture.head == whole[:limit]
    assert capture.dropped == max(0, len(whole) - limit)


def test_files_get_every_byte_masked_and_private(tmp_path: Path) -> None:
    files = [tmp_path / "job" / "web01.stdout", tmp_path / "out" / "web01"]
    for path in files:
        path.parent.mkdir()
    policy = OutputPolicy(max_output=1024, files=lambda host, stream: files, masker=masker)
    capture = policy.capture("web01", "stdout")
    chunk = (b"x" * 1000) + SECRET.encode()
    for _ in range(1000):  # about a megabyte, the secret cut at many places
        capture.write(chunk[:500])
        capture.write(chunk[500:1007])
        capture.write(chunk[1007:])
    capture.close()
    expected = masker.data(chunk) * 1000
    for path in files:
        assert path.read_bytes() == expected
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert capture.head == expected[:1024]
    assert capture.dropped == len(expected) - 1024
    assert capture.saved


def test_a_file_that_cannot_be_written_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "web01"
    capture = OutputPolicy(files=lambda host, stream: [missing]).capture("web01", "stdout")
    with pytest.raises(OutputFileError, match="no-such-dir"):
        capture.write(b"hello")
    capture.write(b" world")  # the head is still kept; the file is given up
    capture.close()
    assert capture.head == b"hello world"
    assert not os.path.exists(missing) and not capture.saved


def test_nothing_printed_makes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "web01.stdout"
    capture = OutputPolicy(files=lambda host, stream: [path]).capture("web01", "stdout")
    capture.close()
    assert not path.exists() and capture.head == b"" and capture.dropped == 0


def test_a_truncated_result_says_how_much_is_missing_and_where_it_is() -> None:
    result = HostResult("web01", "127.0.0.1", Outcome.ok, stdout=b"a" * 1024, stdout_dropped=5000)
    assert result.truncated and result.size("stdout") == 6024
    assert result.text("stdout") == "a" * 1024 + (
        "\n[provisor: stdout truncated: 5,000 more bytes not kept after the first 1 KiB "
        "(--max-output)]\n"
    )
    assert result.text("stderr") == "" and result.size("stderr") == 0
    result.output_saved = True  # the job's files have every byte
    assert result.text("stdout").endswith(
        "(--max-output); the job's output files hold all of it]\n"
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("64K", 65536), ("1M", 1048576), ("1 MiB", 1048576), ("2g", 2 << 30)],
)
def test_sizes_read_as_operators_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1T", "-1M", "1.5M", "M", "1 M B"])
def test_a_size_that_is_none_is_refused_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_sizes_are_shown_in_the_unit_that_reads_best() -> None:
    assert [format_size(n) for n in (512, 1024, 1536, 1048576)] == [
        "512 bytes",
        "1 KiB",
        "1.5 KiB",
        "1 MiB",
    ]


def test_a_mask_is_what_a_secret_becomes() -> None:
    assert masker.data(SECRET.encode()) == MASK.encode()
