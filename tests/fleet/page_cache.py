"""What of a file the kernel holds in its page cache, read with mincore(2)."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path


def resident_pages(path: Path) -> int:
    """How many of ``path``'s pages are in the page cache (mincore(2) on a private map: no page is read in)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
        view = ctypes.c_char.from_buffer(m)
        rc = ctypes.CDLL(None, use_errno=True).mincore(ctypes.c_void_p(ctypes.addressof(view)), ctypes.c_size_t(size), vec)
        del view
        assert rc == 0, os.strerror(ctypes.get_errno())
        return sum(b & 1 for b in vec)
    finally:
        m.close()


def cache_evicts_clean_pages(directory: Path) -> bool:
    """Whether ``directory``'s file system lets a clean, fsynced file's pages leave the cache on DONTNEED (not
    tmpfs, whose pages are the storage)."""
    probe = directory / ".page_cache_probe"
    probe.write_bytes(b"x" * 65536)
    try:
        with open(probe, "rb") as f:
            os.fsync(f.fileno())  # clean pages: the only kind DONTNEED evicts
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return resident_pages(probe) == 0
    finally:
        probe.unlink()
