"""Checkpoint tensors: safetensors files written atomically (:func:`sparseformer.files.write_atomic`),
and an optimizer's state as flat tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import write_atomic


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors file (``format: pt`` metadata, as transformers expects)."""
    from ._deps import require

    st = require("safetensors.torch")
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: st.save_file(flat, tmp, metadata={"format": "pt"}))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from ._deps import require

    return require("safetensors.torch").load_file(str(path))


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """An optimizer's state as flat tensors ``state.<param index>.<key>`` plus its param groups."""
    sd = opt.state_dict()
    flat = {
        f"state.{i}.{k}": (v if isinstance(v, torch.Tensor) else torch.tensor(v))
        for i, s in sd["state"].items()
        for k, v in s.items()
    }
    return flat, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for name, t in flat.items():
        _, i, k = name.split(".", 2)
        state.setdefault(int(i), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": groups})
