"""Process-wide ``malloc`` settings for CPU training (glibc); imports nothing but ctypes.

By default glibc serves large blocks with fresh ``mmap`` pages and gives heap memory back to the
system when enough of it is free. A CPU training step allocates and frees tensors of tens to
hundreds of MB (every ``[T, B, N]`` sequence and its gradient), so it then pays a page fault for
every 4 KiB it touches, again in every step: on the mnist16 model up to 20,000 faults per step, a
third of its time; on a recurrent ALIF layer of 512 neurons over (T, B) = (100, 256), with blocks
up to 32 MiB kept, 12,900 faults per forward and backward pass (a 52 MB sequence), a fifth of its
time. Which blocks fault varies from run to run with what the heap happens to hold.
:func:`retain_freed_memory` keeps freed memory in the heap for reuse instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["retain_freed_memory", "FALLBACK_BLOCK"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> constants
FALLBACK_BLOCK = 32 << 20
"""The largest ``mmap`` threshold older glibc versions accept (half their 64 MiB heap size; glibc 2.36
takes any ``int``): :func:`retain_freed_memory` sets this one where a larger one is refused."""


def retain_freed_memory(max_block: int = 1 << 30) -> bool:
    """Serve blocks up to ``max_block`` bytes from the heap and never shrink the heap.

    The same as starting the process with ``MALLOC_MMAP_THRESHOLD_=max_block`` and
    ``MALLOC_TRIM_THRESHOLD_=2147483647``: the process keeps its peak memory and reuses it. Call it
    first, before ``import torch`` allocates (``train.py`` does); called later, it still applies
    but the heap already laid out around earlier blocks may keep some page faults. A C library that
    refuses ``max_block`` (older glibc versions take at most :data:`FALLBACK_BLOCK`) gets that
    smaller limit: blocks above it keep their fresh pages.

    Args:
        max_block: largest block served from the heap, bytes, at most ``2**31 - 1`` (default 1 GiB:
            the ``[T, B, N]`` float32 sequences of a 256-neuron layer up to T * B = 1,000,000).
    Returns:
        True if both settings were applied (possibly with :data:`FALLBACK_BLOCK`); False on a C
        library without glibc's ``mallopt``.
    """
    if isinstance(max_block, bool) or not isinstance(max_block, int) or not 0 < max_block < 2**31:
        raise ValueError(f"max_block must be an int in (0, 2**31) (bytes; mallopt takes a C int), got {max_block!r}")
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    block_set = bool(mallopt(M_MMAP_THRESHOLD, max_block))
    if not block_set and max_block > FALLBACK_BLOCK:
        block_set = bool(mallopt(M_MMAP_THRESHOLD, FALLBACK_BLOCK))
    return block_set and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
