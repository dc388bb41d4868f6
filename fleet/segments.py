"""The experience store's record bytes: append-only segment files beside its SQLite index.

SQLite keeps the exactly-once index (chunk id, the columns readers select by, and where each record's bytes
are); the bytes go to segment files ``<NNNNNNNN>.seg``, appended once per commit group and made durable with one
``fdatasync`` BEFORE the group's index rows commit. So a committed row always points at bytes already on disk,
and bytes past a segment's last committed row (a crash between that fsync and the commit, or a group whose
commit failed) are never referenced: at open the writer truncates them off the newest segment.

A group's whole 4 KiB blocks are written with ``O_DIRECT`` where the file system takes it (``direct_io``, on by
default): from an aligned staging copy straight to the disk, never through the page cache. On this machine's VM a
64 KiB append through the page cache cost ~50 us of kernel time, direct ~5 us plus ~5 us of copying
(a one-off script, BENCHMARKS.md, hub; ``benchmarks/hub_store_growth.py`` measures the store). Only the
partial block at each end of a group goes through the cache, so the records still lie back to back, byte for
byte as before, and the file still ends where its last record does.

Why not BLOBs in SQLite: in WAL mode every blob byte is copied into 4 KiB pages, written to the WAL, read back
and written again by the checkpoint; appending each byte once, sequentially, is what the disk does fastest
(``benchmarks/hub_store.py``). Segments are never rewritten, so a reader's ``pread`` of a committed row's range
needs no lock against the writer.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import re
from pathlib import Path

from shared_policy.durable import fsync_dir

log = logging.getLogger(__name__)

SEGMENT_BYTES = 256 << 20  # a group starts a new segment once the newest one is this long
LOCK_FILE = "writer.lock"
BLOCK = 4096  # O_DIRECT needs buffer, offset and length in whole blocks: 4096 covers the logical block sizes in use
_NAME = re.compile(r"([0-9]{8})\.seg")


class SegmentError(OSError):
    """A segment cannot be read as the index says (missing, shorter than a committed row)."""


class SegmentLockedError(SegmentError):
    """Another process holds the segments for writing."""


class SegmentClosedError(SegmentError):
    """A read after the segments were closed."""


def segment_path(directory: Path, segment: int) -> Path:
    """The file of segment number ``segment``."""
    return directory / f"{segment:08d}.seg"


def segment_numbers(directory: Path) -> list[int]:
    """The segments in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(int(m[1]) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name)))


class SegmentFiles:
    """Reads records by (segment, offset, length) with ``pread`` on read-only descriptors kept open per segment (at
    most ``max_open``, the least recently opened closed first). Works beside a writer in another process
    (committed ranges never change). One reader at a time: the store calls it under its read lock."""

    def __init__(self, directory: str | Path, max_open: int = 64):
        self.directory, self.max_open = Path(directory), max_open
        self._fds: dict[int, int] = {}
        self._closed = False

    def _fd(self, segment: int) -> int:
        if self._closed:
            raise SegmentClosedError(f"segments in {self.directory} are closed")
        fd = self._fds.get(segment)
        if fd is None:
            path = segment_path(self.directory, segment)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise SegmentError(f"segment {path} is missing") from None
            if len(self._fds) >= self.max_open:  # a reader tailing from the start would otherwise hold every one
                os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[segment] = fd
        return fd

    def read(self, segment: int, offset: int, length: int) -> bytes:
        """The ``length`` bytes at ``offset`` of ``segment``; SegmentError if the file is shorter."""
        fd = self._fd(segment)
        data = os.pread(fd, length, offset)
        while len(data) < length:  # pread returns short only at the end of the file (or on a signal)
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                raise SegmentError(f"segment {segment_path(self.directory, segment)} ends before byte "
                                   f"{offset + length} of a stored record")
            data += more
        return data

    def close(self) -> None:
        """Close the descriptors; later reads raise SegmentClosedError."""
        self._closed = True
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def drop_cached_pages(fd: int) -> None:
    """Ask the kernel to evict a full segment's pages from the page cache: a hint that never loses a byte (clean
    pages go; dirty ones, say of a last append that failed before its fdatasync, are only queued for writeback).
    The hub writes each record once and its exporter normally reads it soon after, so a full segment's pages
    rarely serve a read, while left cached the cache grows with the store. On this machine's VM that made every
    later append dearer: past ~3 GB written, several times the kernel time per 64 KiB chunk
    (``benchmarks/hub_store_growth.py``; its figures in BENCHMARKS.md, hub). A reader of an evicted segment (a
    lagging exporter, a learner's replay) reads it from disk."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:  # a hint: a file system that refuses it costs speed, not data
        log.debug("posix_fadvise(DONTNEED) on a full segment: %s", exc)


def take_writer_lock(directory: str | Path) -> int:
    """Take ``directory``'s exclusive writer lock (a non-blocking ``flock`` on its ``LOCK_FILE``) and return the
    open descriptor that holds it until closed: SegmentLockedError while another process (a hub) holds it."""
    fd = os.open(Path(directory) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:  # BlockingIOError: held; anything else (ENOLCK on NFS): no lock either
        os.close(fd)
        if not isinstance(exc, BlockingIOError):
            raise
        raise SegmentLockedError(f"{directory} is open for writing by another store (a second hub on the "
                                 "same storage_dir?)") from None
    return fd


class SegmentWriter:
    """Appends commit groups to the newest segment (one ``fdatasync`` per group); the one writer of a directory,
    held by an exclusive ``flock`` taken at construction, before anything else is touched (a second hub on the
    same storage is refused, not interleaved). ``recover`` must run before the first ``append``."""

    def __init__(self, directory: str | Path, segment_bytes: int = SEGMENT_BYTES, *, direct_io: bool = True):
        """``direct_io``: write whole blocks with ``O_DIRECT`` (module docstring); where the file system refuses
        it (EINVAL: tmpfs on older kernels, some network file systems) the writer falls back to the page cache."""
        self.directory, self.segment_bytes = Path(directory), segment_bytes
        created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self.directory.parent)
        self._lock_fd = take_writer_lock(self.directory)
        self.truncated_bytes = 0  # unreferenced bytes cut off the newest segment at open
        self._fd, self.segment, self.end = -1, 0, 0
        self.direct_io = direct_io
        self._direct_fd = -1  # the newest segment opened O_DIRECT (whole blocks); ``_fd`` writes the partial ones
        self._staging: mmap.mmap | None = None  # page-aligned: where a group is copied for its O_DIRECT write

    def recover(self, indexed_ends: dict[int, int]) -> None:
        """Check the segments against the index (``indexed_ends``: segment -> where its last committed record
        ends) and open the newest for appending: a referenced segment missing or shorter than the index says is a
        SegmentError (a record would be lost); bytes past the newest segment's last committed record are cut."""
        for n, end in sorted(indexed_ends.items()):
            path = segment_path(self.directory, n)
            if not path.exists():
                raise SegmentError(f"segment {path} is missing but the index has records in it: restore it "
                                   "from a backup")
            if path.stat().st_size < end:
                raise SegmentError(f"segment {path} is {path.stat().st_size} bytes but the index has records up "
                                   f"to byte {end}: restore it from a backup")
        # the newest: never a number the index already uses for older bytes (a lost file is refused above)
        self.segment = max([*segment_numbers(self.directory), *indexed_ends, 1])
        self._open(self.segment)
        self.end = indexed_ends.get(self.segment, 0)
        size = os.fstat(self._fd).st_size
        if size > self.end:
            os.ftruncate(self._fd, self.end)
            os.fsync(self._fd)
            self.truncated_bytes = size - self.end
            log.warning("store segment %s: %d bytes past the last committed record (never acked) truncated",
                        segment_path(self.directory, self.segment), self.truncated_bytes)

    def _open(self, segment: int) -> None:
        fd = os.open(segment_path(self.directory, segment), os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # a new file's name must be durable before any row points into it (cheap: once per segment)
            os.fsync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if self.direct_io:
            try:
                self._direct_fd = os.open(segment_path(self.directory, segment), os.O_WRONLY | os.O_DIRECT)
            except OSError as exc:  # a speed-up only: without it this segment goes through the page cache
                if exc.errno == errno.EINVAL:
                    self._no_direct_io(exc)
                else:
                    log.warning("store segment %s: no O_DIRECT descriptor (%s); this segment goes through the "
                                "page cache", segment_path(self.directory, segment), exc)

    def _no_direct_io(self, exc: OSError) -> None:
        # for the rest of this writer's life: EINVAL from O_DIRECT means the file system (or its alignment rule)
        # refuses it, which does not change while the hub runs; the cost is speed, never data
        log.info("store segments in %s: O_DIRECT refused (%s); writing through the page cache", self.directory, exc)
        self.direct_io = False
        self._close_direct()

    def _close_direct(self) -> None:
        if self._direct_fd >= 0:
            fd, self._direct_fd = self._direct_fd, -1
            os.close(fd)

    def _staged(self, records: list[bytes | memoryview], lead: int, length: int) -> memoryview:
        """``records`` copied back to back into the page-aligned staging buffer from byte ``lead`` on: buffer byte
        k then belongs at file offset (group start - lead + k), so whole buffer blocks are whole file blocks."""
        need = lead + length
        if self._staging is None or len(self._staging) < need:
            # dropped, not closed: a failed write's traceback may still hold a view of it (close would raise
            # BufferError); the map goes when the last view does
            self._staging = mmap.mmap(-1, -(-need // BLOCK) * BLOCK)
        view, k = memoryview(self._staging), lead
        for rec in records:
            n = len(rec)
            view[k:k + n] = rec
            k += n
        return view

    def _write(self, fd: int, view: memoryview, position: int) -> None:
        while view:
            n = os.pwrite(fd, view, position)
            view, position = view[n:], position + n

    def _write_group(self, records: list[bytes | memoryview], start: int, length: int) -> None:
        """Write the group at ``start``: its whole blocks O_DIRECT, the partial block at either end (and all of
        a group that spans no whole block) through the page cache."""
        lead = start % BLOCK
        first, last = (BLOCK if lead else 0), (lead + length) // BLOCK * BLOCK  # whole blocks: [first, last)
        if self._direct_fd < 0 or last <= first:
            for rec in records:
                self._write(self._fd, memoryview(rec), start)
                start += len(rec)
            return
        buf, base = self._staged(records, lead, length), start - lead
        self._write(self._fd, buf[lead:first], start)
        try:
            self._write(self._direct_fd, buf[first:last], base + first)
        except OSError as exc:  # EINVAL: O_DIRECT refused (at the first block, or after a short write): the whole
            # range again through the cache, from the same buffer: any block already written gets the same bytes
            if exc.errno != errno.EINVAL:
                raise
            self._no_direct_io(exc)
            self._write(self._fd, buf[first:last], base + first)
        self._write(self._fd, buf[last:lead + length], base + last)

    def append(self, records: list[bytes | memoryview]) -> list[tuple[int, int]]:
        """Write ``records`` one after another and ``fdatasync`` them: where each starts, ``(segment, offset)``.
        On an error nothing written may be referenced: the space is skipped (never rewritten: a commit that
        failed may still have reached the disk) and OSError raised."""
        if self.end >= self.segment_bytes:
            # the full segment is forgotten before it is closed: a close that fails leaves no descriptor to be
            # reused and no rollover half done (the next append opens the next segment); both are closed
            fd, self._fd = self._fd, -1
            self.segment, self.end = self.segment + 1, 0
            try:
                if fd >= 0:
                    drop_cached_pages(fd)  # what the partial blocks and readers left in the cache
                self._close_direct()
            finally:
                if fd >= 0:
                    os.close(fd)
        if self._fd < 0:  # a new segment (or one whose creation failed last time: tried again)
            self._open(self.segment)
        start, places, offset = self.end, [], self.end
        for rec in records:
            places.append((self.segment, offset))
            offset += len(rec)
        self.end = offset  # taken now: a failure below leaves a gap, never a range written twice
        self._write_group(records, start, offset - start)
        os.fdatasync(self._fd)  # the file's: the page-cache blocks, the size, and the disk's cache for the direct ones
        return places

    def close(self) -> None:
        """Close the segment and release the lock (released even if closing a segment fails)."""
        try:
            self._staging = None  # unmapped with its last view (see ``_staged``)
            fd, self._fd = self._fd, -1
            try:
                if fd >= 0:
                    os.close(fd)
            finally:
                self._close_direct()
        finally:
            if self._lock_fd >= 0:
                fd, self._lock_fd = self._lock_fd, -1
                os.close(fd)
