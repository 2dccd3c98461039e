"""``sparseformer bench``: measure every sparse strategy on this device and recommend one.

The library part: the sweep, measurements, recommendation, reports and plots; the command line
lives in :mod:`sparseformer.cli.bench`.
"""
