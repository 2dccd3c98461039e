"""``sparseformer bench``: measure every sparse strategy on this device and recommend one.

The command lives in :mod:`sparseformer.bench.command` (``add_parser``, ``run``, ``main``).
"""
