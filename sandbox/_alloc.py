"""CPU allocator setting for the whole process, applied when ``sandbox`` is imported.

PyTorch's CPU allocator backs blocks of 2 MB and more with transparent huge pages when ``THP_MEM_ALLOC_ENABLE=1``
(it aligns them to 2 MB and calls ``madvise(MADV_HUGEPAGE)``; the variable is read once, at the first allocation).
Without it every fresh activation is faulted in 4 KB at a time: on the 2-core development VM a 16 MB elementwise op
ran 2x slower on a fresh output than on a reused one, and ``swinir``/``vheatir`` inference at 512 x 512 ran 1.5-1.9x
slower. The kernel must allow it (``/sys/kernel/mm/transparent_hugepage/enabled``: ``always`` or ``madvise``);
elsewhere the setting does nothing. ``THP_MEM_ALLOC_ENABLE=0`` in the environment turns it off.
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
