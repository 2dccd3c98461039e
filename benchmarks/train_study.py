"""The sparse-vs-dense training study in one command: ``sparseformer study`` (dense and every
strategy of ``sparseformer.train.strategies`` trained from scratch on the standard library's
``.py`` files, at equal steps and at equal wall-clock), writing report.md, study.json and PNGs to
``--out``. Runs under ``torchrun --nproc-per-node N`` too. See docs/training.md.

    python benchmarks/train_study.py --out study --context 1024 --steps 200
    python benchmarks/train_study.py --out study4k --context 4096 --block-size 64 --steps 1000

Any ``sparseformer study`` option may be given.
"""

import sys

from sparseformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
