"""Benchmarks of quantrec's core, outside it: ``quantrec bench`` and ``quantrec bench --train``.

``inference`` times fp32, fp16, int8 and a searched precision plan side by side; ``train``
times a naive per-table trainer against quantrec's; both on Criteo-shaped rows of the
synthetic feed (``criteo``). ``cli`` holds the options (``options``: every default once).
They live here, not in ``models/``, because they change the process: glibc's allocator
settings (``ctypes``), ``/proc`` resets of peak memory, torch's thread count.
"""
