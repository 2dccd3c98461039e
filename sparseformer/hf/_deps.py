"""Optional dependencies of :mod:`sparseformer.hf`, imported only when used."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str = "hf") -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install (``hf``, ``train``)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"sparseformer.{extra} needs the package {module.split('.')[0]!r} ({e}); "
            f"install it with: pip install sparseformer[{extra}]"
        ) from e


def progress(iterable=None, **kwargs):
    """A tqdm progress bar (the ``tqdm`` package ships with the ``progress`` and ``dev`` extras)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as e:
        raise ImportError(f"progress bars need tqdm ({e}); install it with: pip install sparseformer[progress]") from e
    return tqdm(iterable, **kwargs)
