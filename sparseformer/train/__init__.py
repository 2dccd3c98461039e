"""Training :class:`~sparseformer.nn.SparseCausalLM` from scratch on standard-library bytes, in one
process or under ``torchrun`` (DDP), and the sparse-vs-dense study.

>>> from sparseformer.train import TrainConfig, train
>>> train(TrainConfig(context=1024, steps=200), "runs/sliding")   # resumable: resume=True
>>> run_study(StudyConfig(base=TrainConfig(pattern=None)), "study", command="...")
"""

from .config import TrainConfig
from .loop import train
from .strategies import NAMES, Geometry
from .study import StudyConfig
from .study import run as run_study

__all__ = ["NAMES", "Geometry", "StudyConfig", "TrainConfig", "run_study", "train"]
