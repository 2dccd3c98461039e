"""Attention kernels over a :class:`~sparseformer.layout.BlockLayout`, all with one contract:
``fn(q, k, v, layout, *, key_padding_mask, scale, dropout_p, softcap, sinks) -> out`` (the
meaning of each argument: :func:`sparseformer.sparse_attention`)."""
