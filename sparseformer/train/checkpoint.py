"""A training checkpoint: one safetensors file, written to a temporary name and renamed.

Tensors: ``model.<name>`` (the model's ``state_dict``; the tied embedding and output weights are
stored under both names) and ``optimizer.state.<param index>.<key>`` (AdamW's moments and step
counts). Metadata: ``format: pt`` and ``sparseformer.train``, a JSON object with the training
configuration, the step, the training seconds and tokens so far, the metrics accumulators and
the optimizer's param groups. One file, renamed into place, so a killed run leaves either the
previous checkpoint or the new one, never a mix. It loads with safetensors only (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..files import write_atomic
from ..hf._deps import require
from ..hf.checkpoint import load_optimizer, optimizer_tensors

KEY = "sparseformer.train"


def save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Write ``model``, ``opt`` and the JSON-able ``state`` to ``path`` (atomically)."""
    st = require("safetensors.torch", "train")
    flat, groups = optimizer_tensors(opt)
    tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tensors.update({f"optimizer.{k}": v.detach().cpu().clone() for k, v in flat.items()})
    meta = {"format": "pt", KEY: json.dumps({**state, "optimizer_groups": groups}, sort_keys=True)}
    write_atomic(str(path), lambda tmp: st.save_file(tensors, tmp, metadata=meta))


def read_state(path: Path) -> dict:
    """The JSON state stored in the checkpoint at ``path`` (without loading its tensors)."""
    safetensors = require("safetensors", "train")
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if KEY not in meta:
        raise ValueError(f"{path} is not a sparseformer training checkpoint (no {KEY!r} metadata)")
    return json.loads(meta[KEY])


def load(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Load the checkpoint at ``path`` into ``model`` and ``opt`` (each copies to its own device);
    returns its state."""
    state = read_state(path)
    tensors = require("safetensors.torch", "train").load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    flat = {k[10:]: v for k, v in tensors.items() if k.startswith("optimizer.")}
    load_optimizer(opt, flat, state.pop("optimizer_groups"))
    return state
