"""The segment writer: groups written O_DIRECT in whole blocks and through the page cache at their ends, byte for
byte where the index says, on a real file system."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import fleet.segments
from fleet.segments import BLOCK, SegmentFiles, SegmentWriter, segment_path
from tests.fleet.page_cache import cache_evicts_clean_pages, resident_pages

# a group smaller than a block, one ending on a block boundary, one starting on one, and groups with a partial
# block at both ends and whole blocks between
GROUPS = [[100], [2 * BLOCK - 100], [BLOCK - 100], [3 * BLOCK], [5000, 70_000, 1], [1], [65_536, 65_536, 65_536],
          [BLOCK]]  # [2 * BLOCK - 100]: a partial head, a whole block, and an end on a boundary


def _write(directory, rng, direct_io: bool) -> tuple[SegmentWriter, list[tuple[tuple[int, int], bytes]]]:
    writer = SegmentWriter(directory, direct_io=direct_io)
    writer.recover({})
    placed = []
    for sizes in GROUPS:
        records = [rng.bytes(n) for n in sizes]
        placed += list(zip(writer.append(records), records, strict=True))
        # back to back, and the file ends where the last record does: no padding, no gap
        assert os.stat(segment_path(writer.directory, writer.segment)).st_size == writer.end
    return writer, placed


@pytest.mark.parametrize("direct_io", [True, False])
def test_groups_at_every_alignment_read_back_byte_for_byte_with_no_gap(tmp_path, direct_io):
    writer, placed = _write(tmp_path / "segs", np.random.default_rng(0), direct_io)
    writer.close()
    if direct_io and _takes_o_direct(tmp_path):  # elsewhere the direct case checks the fallback's bytes
        assert writer.direct_io, "O_DIRECT is taken here, yet the direct case ran through the page cache"
    offsets = [off for (_, off), _ in placed]
    assert offsets == list(np.cumsum([0] + [len(r) for _, r in placed[:-1]]))
    files = SegmentFiles(tmp_path / "segs")
    try:
        assert all(files.read(seg, off, len(rec)) == rec for (seg, off), rec in placed)
    finally:
        files.close()
    whole = segment_path(tmp_path / "segs", 1).read_bytes()
    assert whole == b"".join(rec for _, rec in placed)


def test_direct_writes_keep_a_groups_whole_blocks_out_of_the_page_cache(tmp_path):
    writer = _opened(tmp_path / "segs")
    try:
        if not writer.direct_io or not cache_evicts_clean_pages(tmp_path):  # refused (logged), or tmpfs: its
            pytest.skip(f"{tmp_path}'s file system refuses O_DIRECT or keeps every page")  # pages are the storage
        rng = np.random.default_rng(1)
        writer.append([rng.bytes(100)])  # the next group starts mid-block
        writer.append([rng.bytes(65_536) for _ in range(16)])  # 1 MiB: 256 pages, whole blocks but its two ends
        path = segment_path(writer.directory, writer.segment)
        # through the page cache (the code before) every page of the group stayed resident until its segment filled
        assert resident_pages(path) <= 2
    finally:
        writer.close()


def test_a_file_system_refusing_o_direct_gets_the_page_cache_and_the_same_bytes(tmp_path, monkeypatch):
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(fleet.segments.os, "open", refusing_open)
    writer, placed = _write(tmp_path / "segs", np.random.default_rng(2), direct_io=True)
    try:
        assert not writer.direct_io
        assert segment_path(tmp_path / "segs", 1).read_bytes() == b"".join(rec for _, rec in placed)
    finally:
        writer.close()


def _opened(directory) -> SegmentWriter:
    writer = SegmentWriter(directory)
    writer.recover({})
    return writer


def _pwrite_failing(monkeypatch, code: int, on_fd=lambda fd: True) -> None:
    """``os.pwrite`` as the segments module calls it raises OSError ``code`` on the descriptors ``on_fd`` picks."""
    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):
        if on_fd(fd):
            raise OSError(code, os.strerror(code))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(fleet.segments.os, "pwrite", pwrite)


def test_o_direct_refused_at_the_write_sends_the_group_through_the_page_cache_intact(tmp_path, monkeypatch):
    writer = _opened(tmp_path / "segs")
    _pwrite_failing(monkeypatch, errno.EINVAL, on_fd=lambda fd: fd == writer._direct_fd)
    rng = np.random.default_rng(3)
    records = [rng.bytes(n) for n in (100, 3 * BLOCK, 70_000)]
    try:
        places = writer.append(records)
        assert not writer.direct_io and writer._direct_fd == -1
        places += writer.append(records)  # and the next group, all through the cache
        data = segment_path(writer.directory, writer.segment).read_bytes()
        assert [data[off:off + len(r)] for (_, off), r in zip(places, records * 2, strict=True)] == records * 2
    finally:
        writer.close()


def test_a_failed_write_still_holding_the_staging_buffer_does_not_stop_later_groups_or_close(tmp_path, monkeypatch):
    writer = _opened(tmp_path / "segs")
    rng = np.random.default_rng(4)
    with monkeypatch.context() as failing:
        _pwrite_failing(failing, errno.EIO)
        with pytest.raises(OSError) as failed:  # its traceback keeps views of the staging buffer alive
            writer.append([rng.bytes(3 * BLOCK)])
    bigger = [rng.bytes(64 * BLOCK)]  # outgrows the buffer: a new one, the old still viewed
    (_, off), = writer.append(bigger)
    writer.close()  # and the lock is given back
    assert failed.value.errno == errno.EIO
    assert segment_path(tmp_path / "segs", 1).read_bytes()[off:] == bigger[0]
    SegmentWriter(tmp_path / "segs").close()  # a second writer gets the lock


def _takes_o_direct(directory) -> bool:
    """Whether the file system under ``directory`` opens files with O_DIRECT (tmpfs before Linux 6.6 does not)."""
    try:
        fd = os.open(directory / "o_direct_probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    return True


def _open_paths(directory) -> list[str]:
    """The files under ``directory`` this process holds open."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (another thread's)
            continue
        if target.startswith(str(directory)):
            out.append(target)
    return out


def test_a_close_failing_at_segment_rollover_leaks_no_descriptor_and_the_next_group_opens_the_next_segment(
        tmp_path, monkeypatch):
    if not _takes_o_direct(tmp_path):
        pytest.skip("this file system refuses O_DIRECT: no direct descriptor to fail closing")
    writer = SegmentWriter(tmp_path / "segs", segment_bytes=2 * BLOCK)
    writer.recover({})
    rng = np.random.default_rng(5)
    first = [rng.bytes(3 * BLOCK)]  # fills segment 1
    writer.append(first)
    assert writer.direct_io and writer._direct_fd >= 0  # this file system takes O_DIRECT: its close is the one failing
    real_close, failing = os.close, writer._direct_fd

    def close(fd):
        real_close(fd)
        if fd == failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # closed, but reported failed (as NFS may)

    monkeypatch.setattr(fleet.segments.os, "close", close)
    second = [rng.bytes(BLOCK + 7)]
    with pytest.raises(OSError):
        writer.append(second)
    monkeypatch.undo()
    (seg, off), = writer.append(second)
    writer.close()
    assert (seg, off) == (2, 0)
    assert segment_path(tmp_path / "segs", 1).read_bytes() == first[0]
    assert segment_path(tmp_path / "segs", 2).read_bytes() == second[0]
    assert _open_paths(tmp_path / "segs") == []  # segment 1's buffered descriptor was closed too
