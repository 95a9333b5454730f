"""The CPU allocator's huge-page setting, turned on by the entry scripts that ask for it (never on import).

PyTorch's CPU allocator backs blocks of 2 MB and more with transparent huge pages when ``THP_MEM_ALLOC_ENABLE=1``
(it aligns them to 2 MB and calls ``madvise(MADV_HUGEPAGE)``). Without it every fresh activation is faulted in 4 KB
at a time, which makes elementwise ops on fresh outputs and large-image inference markedly slower on CPU (the
measurements are in docs/benchmarks.md). The kernel must allow it
(``/sys/kernel/mm/transparent_hugepage/enabled``: ``always`` or ``madvise``); elsewhere the setting does nothing.

PyTorch reads the variable once, at the first CPU allocation of the process, so :func:`enable_huge_pages` must run
before any tensor exists: first thing in an entry script's ``main`` (``experiments/bench.py`` does). Importing
``torch`` or ``sandbox`` allocates nothing, so calling it after those imports is early enough. It changes the
environment of the whole process (and of its child processes), which is why importing ``sandbox`` does not call it.
"""

from __future__ import annotations

import os

__all__ = ["THP_ENV", "enable_huge_pages"]

THP_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already sets it; True if huge pages are on.

    Idempotent. A value the user set is kept (``THP_MEM_ALLOC_ENABLE=0`` turns the setting off). Call it before the
    first tensor is allocated: PyTorch reads the variable at its first CPU allocation and never again.
    """
    return os.environ.setdefault(THP_ENV, "1") == "1"
