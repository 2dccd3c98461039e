"""``BlockLayout``: a pattern compiled for one shape, in block CSR form.

Rows of the CSR are ``r = hl * nq + qb`` (``hl`` a layout head, ``qb`` a query tile); each
entry is a key tile ``kb`` that the row visits, with

* ``mask_id[e] == -1``: the tile is *full*: every pair ``(i, j)`` with ``i`` in
  ``[qb*bs, qb*bs + bs)`` and ``j`` in ``[kb*bs, kb*bs + bs)`` attends (a tile holding key
  indices ``>= kv_len`` is never full);
* ``mask_id[e] = m >= 0``: the tile is *partial*: ``masks[m, r, c]`` says whether query
  ``qb*bs + r`` attends key ``kb*bs + c`` (False beyond ``kv_len`` and for query rows
  ``>= q_len``);
* ``log_weight[e]`` (if any) is added to every score of the tile.

``slopes[h]`` (if any) adds ``-slopes[h] * |i + q_offset - j|`` to the scores of query head
``h``. ``layout_heads`` is 1 when every head has the same tiles and weights, else ``num_heads``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from .band import Band, band_of
from .patterns.base import FULL, NONE, PARTIAL, Pattern, Shape, check_int
from .patterns.causal import Causal
from .patterns.compose import Intersection, Union

_REFINE_CHUNK = 1 << 22  # elements of element masks evaluated at once
_BUCKET_SCORES = 1 << 24  # scores per batch element computed at once by row-bucket backends


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Run tensor code eagerly even inside a trace (``torch.export``, ``torch.onnx.export``): for
    layout data, a pure function of ints that the graph holds as constants."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

    with unset_fake_temporarily(), disable_proxy_modes_tracing():
        yield


@dataclass(frozen=True, eq=False)
class BlockLayout:
    q_len: int
    kv_len: int
    num_heads: int
    block_size: int
    causal: bool
    q_offset: int
    layout_heads: int
    row_ptr: torch.Tensor  # int64 [layout_heads * nq + 1]
    col_idx: torch.Tensor  # int64 [nnz]
    mask_id: torch.Tensor  # int64 [nnz], -1 = full
    masks: torch.Tensor  # bool [P, bs, bs]
    log_weight: torch.Tensor | None  # float64 [nnz]
    slopes: torch.Tensor | None  # float64 [num_heads]
    pattern: Pattern | None = field(default=None, repr=False)
    _device_cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def nq(self) -> int:
        return -(-self.q_len // self.block_size)

    @property
    def nk(self) -> int:
        return -(-self.kv_len // self.block_size)

    @property
    def nnz(self) -> int:
        return int(self.col_idx.numel())

    @cached_property
    def row_counts(self) -> torch.Tensor:
        """Visited key tiles per row, ``int64 [layout_heads, nq]``."""
        return (self.row_ptr[1:] - self.row_ptr[:-1]).view(self.layout_heads, self.nq)

    @property
    def visited_tiles(self) -> int:
        """Tiles computed, over all ``num_heads`` heads."""
        return self.nnz * (self.num_heads // self.layout_heads)

    @property
    def block_density(self) -> float:
        """Visited tiles over all tiles (what a block kernel pays, relative to dense)."""
        return self.visited_tiles / (self.num_heads * self.nq * self.nk)

    @cached_property
    def pair_count(self) -> int:
        """Attending (query, key) pairs over all heads."""
        bs = self.block_size
        rows = torch.repeat_interleave(torch.arange(self.layout_heads * self.nq), self.row_counts.flatten())
        qb = rows % self.nq
        q_in = torch.clamp(self.q_len - qb * bs, max=bs)
        k_in = torch.clamp(self.kv_len - self.col_idx * bs, max=bs)
        full = self.mask_id < 0
        n = int((q_in * k_in)[full].sum())
        if self.masks.numel():
            per_mask = self.masks.flatten(1).sum(-1)
            n += int(per_mask[self.mask_id[~full]].sum())
        return n * (self.num_heads // self.layout_heads)

    @property
    def density(self) -> float:
        """Attending pairs over all ``num_heads * q_len * kv_len`` pairs."""
        return self.pair_count / (self.num_heads * self.q_len * self.kv_len)

    @cached_property
    def band(self) -> Band | None:
        """The layout as a :class:`~sparseformer.band.Band` (sliding windows and truncated
        decays plus a prefix of global tokens, self-attention, no sampled blocks), or None: backends that batch rows use
        contiguous slices for such layouts instead of gathered tiles."""
        if self.pattern is None or self.q_len != self.kv_len or self.q_offset or self.log_weight is not None:
            return None
        return band_of(self.pattern, self.block_size, self.causal, self.num_heads)

    @cached_property
    def strided(self):
        """The layout as ``(band, sample)``: a band (see :attr:`band`) plus one
        :class:`~sparseformer.patterns.StridedSample` resolved for this shape (``sample.stride``,
        ``sample.reweight``, ``sample.tiles``: its candidate tiles ``bool [H, nq, nk]``), for
        self-attention; else None. The ``gather`` backend computes such layouts with
        :func:`~sparseformer.kernels.strided.strided_band_attention`."""
        from .patterns.strided_sample import StridedSample, _StridedIn

        if self.pattern is None or self.q_len != self.kv_len or self.q_offset:
            return None
        top = self.pattern
        parts = top.parts if isinstance(top, Union) else (top,)
        sampled = [x for x in parts if isinstance(x, StridedSample)]
        rest = [x for x in parts if not isinstance(x, StridedSample)]
        if len(sampled) != 1 or not rest:
            return None
        band = band_of(Union.of(*rest) if len(rest) > 1 else rest[0], self.block_size, self.causal, self.num_heads)
        if band is None:
            return None
        shape = Shape(self.q_len, self.kv_len, self.num_heads, self.block_size, 0)
        root = Intersection.of(self.pattern, Causal()) if self.causal else self.pattern
        found = [x for x in _leaves(root._resolve(shape, None)) if isinstance(x, _StridedIn)]
        return band, found[0]

    def __repr__(self) -> str:
        return (
            f"BlockLayout(q_len={self.q_len}, kv_len={self.kv_len}, num_heads={self.num_heads}, "
            f"block_size={self.block_size}, causal={self.causal}, nnz={self.nnz}, "
            f"density={self.density:.4f}, block_density={self.block_density:.4f})"
        )

    # -- dense views (oracle, pictures, tests) -----------------------------------------------
    def tile_mask_ids(self) -> torch.Tensor:
        """``int64 [layout_heads, nq, nk]``: -2 not visited, -1 full, else the mask id."""
        out = torch.full((self.layout_heads * self.nq, self.nk), -2, dtype=torch.int64)
        rows = torch.repeat_interleave(torch.arange(self.layout_heads * self.nq), self.row_counts.flatten())
        out[rows, self.col_idx] = self.mask_id
        return out.view(self.layout_heads, self.nq, self.nk)

    def to_block_states(self) -> torch.Tensor:
        """``uint8 [layout_heads, nq, nk]``: 0 not visited, 1 partial, 2 full."""
        ids = self.tile_mask_ids()
        return torch.where(ids == -1, FULL, torch.where(ids >= 0, PARTIAL, NONE)).to(torch.uint8)

    def to_dense_mask(self) -> torch.Tensor:
        """``bool [layout_heads, q_len, kv_len]``: whether query ``i`` attends key ``j``. O(L²)."""
        bs = self.block_size
        ids = self.tile_mask_ids()  # [Hl, nq, nk]
        table = torch.cat(
            [torch.ones(1, bs, bs, dtype=torch.bool), torch.zeros(1, bs, bs, dtype=torch.bool), self.masks]
        )
        tiles = table[torch.where(ids == -1, 0, torch.where(ids == -2, 1, ids + 2))]  # [Hl, nq, nk, bs, bs]
        dense = tiles.permute(0, 1, 3, 2, 4).reshape(self.layout_heads, self.nq * bs, self.nk * bs)
        return dense[:, : self.q_len, : self.kv_len].contiguous()

    def to_dense_bias(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Additive score terms ``[H', q_len, kv_len]`` (H' = num_heads with slopes, else
        layout_heads): decay bias plus sampled-block log-weights, 0 elsewhere. O(L²)."""
        bs = self.block_size
        bias = torch.zeros(self.layout_heads, self.q_len, self.kv_len, dtype=torch.float64)
        if self.log_weight is not None:
            w = torch.zeros(self.layout_heads * self.nq, self.nk, dtype=torch.float64)
            rows = torch.repeat_interleave(torch.arange(self.layout_heads * self.nq), self.row_counts.flatten())
            w[rows, self.col_idx] = self.log_weight
            w = w.view(self.layout_heads, self.nq, self.nk)
            bias = bias + w.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[:, : self.q_len, : self.kv_len]
        if self.slopes is not None:
            d = (torch.arange(self.q_len)[:, None] + self.q_offset - torch.arange(self.kv_len)[None, :]).abs()
            bias = bias - self.slopes[:, None, None] * d.double()
        return bias.to(dtype)

    def flex_tables(
        self, device: torch.device | str = "cpu", block: int | None = None, padded: bool = False
    ) -> FlexTables:
        """The device tables FlexAttention reads for this layout with FlexAttention tiles of
        ``block`` tokens (default: the layout's block size; a power-of-two multiple of it, as
        FlexAttention's CUDA kernels need 128), see :class:`FlexTables`. O(Hl·nq·nk + P·bs²),
        built once per device, block and ``padded``, cached on the layout. ``padded``: the tile
        grid grows to a power of two of FlexAttention tiles each way (tiles not visited), so
        that lengths up to the same power of two share one compiled graph (a shape bucket)."""
        bs = self.block_size
        block = bs if block is None else block
        if isinstance(block, bool) or not isinstance(block, int) or block < bs or block % bs or block & (block - 1):
            raise ValueError(f"block must be a power-of-two multiple of the block size {bs}, got {block!r}")
        key = ("flex", str(torch.device(device)), block, padded)
        if key not in self._device_cache:
            f, hl = block // bs, self.layout_heads
            nqc, nkc = -(-self.nq // f), -(-self.nk // f)  # FlexAttention tiles
            if padded:
                nqc, nkc = 1 << (nqc - 1).bit_length(), 1 << (nkc - 1).bit_length()
            # Layout tiles, padded to whole FlexAttention tiles with tiles not visited.
            ids = torch.full((hl, nqc * f, nkc * f), -2, dtype=torch.int64)
            ids[:, : self.nq, : self.nk] = self.tile_mask_ids()  # -2 not visited, -1 full, else mask id
            # rows >= P + 2, a power of two, at least 16: layouts of one shape share a compiled graph
            rows = max(16, 1 << (self.masks.shape[0] + 1).bit_length())
            table = torch.zeros(rows, bs, bs, dtype=torch.bool)
            table[0] = True
            table[2 : 2 + self.masks.shape[0]] = self.masks
            weights = None
            if self.log_weight is not None:
                weights = torch.zeros(hl * self.nq, self.nk)
                r = torch.repeat_interleave(torch.arange(hl * self.nq), self.row_counts.flatten())
                weights[r, self.col_idx] = self.log_weight.float()
                weights = F.pad(weights.view(hl, self.nq, self.nk), (0, nkc * f - self.nk, 0, nqc * f - self.nq))
            sub = ids.view(hl, nqc, f, nkc, f).transpose(2, 3).flatten(3)  # [Hl, nqc, nkc, f*f]
            states = torch.where((sub == -1).all(-1), FULL, torch.where((sub != -2).any(-1), PARTIAL, NONE)).to(
                torch.uint8
            )
            self._device_cache[key] = FlexTables(
                block=block,
                states=states.to(device),
                tile_ids=torch.where(ids == -1, 0, torch.where(ids == -2, 1, ids + 2)).to(device),
                tile_table=table.to(device),
                slopes=None if self.slopes is None else self.slopes.float().to(device),
                log_weight=None if weights is None else weights.to(device),
            )
        return self._device_cache[key]

    def to_block_mask(
        self,
        device: torch.device | str = "cpu",
        key_padding_mask: torch.Tensor | None = None,
        block: int | None = None,
        padded: bool = False,
    ):
        """FlexAttention's ``BlockMask`` for this layout, in tiles of ``block`` tokens (see
        :meth:`flex_tables`): a tile is visited if any layout tile in it is, full if all of them
        are full, and the ``mask_mod`` reads the layout's element masks, so the pairs are exactly
        the layout's. Score terms are not part of a BlockMask: see :meth:`flex_score_mod`.

        With ``key_padding_mask`` (``bool [B, kv_len]``, True = keep) the mask gets a batch
        dimension ``B``: in batch ``b`` a tile with a padded key is partial, a tile with no kept
        key is not visited, and the ``mask_mod`` also drops the padded keys. Without it the mask
        (batch dimension 1) is built once per device, block and ``padded``, and cached on the layout.

        ``padded`` (:meth:`flex_tables`): the mask is for queries and keys zero-padded to the
        grown grid's lengths; the keys past ``kv_len`` are dropped like padded keys (so a tile
        holding some is partial); the rows of the queries past ``q_len`` are the caller's to drop
        (those in the last visited query tile attend its keys, the others none).
        """
        from torch.nn.attention.flex_attention import BlockMask

        t = self.flex_tables(device, block, padded)
        key = ("flex_block_mask", str(torch.device(device)), t.block, padded)
        if key_padding_mask is None and key in self._device_cache:
            return self._device_cache[key]
        hl, bs, n = self.layout_heads, self.block_size, t.states.shape[-1]
        states = t.states[None]  # [1, Hl, nqc, nkc]: 0 not visited, 1 partial, 2 full
        kpm = key_padding_mask
        if padded and kpm is None and self.kv_len < n * t.block:  # the keys past kv_len are padding
            kpm = torch.ones(1, self.kv_len, dtype=torch.bool)
        if kpm is not None:
            kpm = F.pad(kpm.to(t.states.device), (0, n * t.block - self.kv_len))  # [B, nkc * block]
            kept = kpm.view(kpm.shape[0], n, t.block).sum(-1)[:, None, None, :]  # [B, 1, 1, nkc] kept keys
            if padded:  # every key of a tile is in the inputs
                width = torch.full((n,), t.block, device=kpm.device)
            else:  # the inputs end at kv_len, FlexAttention drops the rest
                width = (self.kv_len - torch.arange(n, device=kpm.device) * t.block).clamp(0, t.block)
            states = torch.where(kept == 0, NONE, torch.where((kept < width) & (states == FULL), PARTIAL, states))
        kv_num, kv_idx = _ordered(states == PARTIAL)
        full_num, full_idx = _ordered(states == FULL)
        tile_ids, tile_table = t.tile_ids, t.tile_table

        def mask_mod(b, h, q_idx, kv_idx):
            tile = tile_ids[h if hl > 1 else h * 0, q_idx // bs, kv_idx // bs]
            keep = tile_table[tile, q_idx % bs, kv_idx % bs]
            return keep if kpm is None else keep & kpm[b if kpm.shape[0] > 1 else b * 0, kv_idx]

        lengths = (t.states.shape[-2] * t.block, n * t.block) if padded else (self.q_len, self.kv_len)
        block_mask = BlockMask.from_kv_blocks(
            kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=t.block, mask_mod=mask_mod, seq_lengths=lengths
        )
        if key_padding_mask is None:
            self._device_cache[key] = block_mask
        return block_mask

    def flex_score_mod(self, device: torch.device | str = "cpu", block: int | None = None, padded: bool = False):
        """FlexAttention ``score_mod`` adding this layout's score terms (decay bias
        ``-slopes[h]·|q_idx + q_offset - kv_idx|`` and sampled-block log-weights) from
        O(H + Hl·nq·nk) tables on ``device``, or None when it has none. Pair it with
        :meth:`to_block_mask` (same ``block`` and ``padded``). Cached, so a compiled caller sees
        one function."""
        if self.slopes is None and self.log_weight is None:
            return None
        t = self.flex_tables(device, block, padded)
        key = ("flex_score_mod", str(torch.device(device)), t.block, padded)
        if key not in self._device_cache:
            bs, hl, off, slopes, table = self.block_size, self.layout_heads, self.q_offset, t.slopes, t.log_weight

            def score_mod(score, b, h, q_idx, kv_idx):
                if slopes is not None:
                    score = score - slopes[h] * (q_idx + off - kv_idx).abs()
                if table is not None:
                    score = score + table[h if hl > 1 else h * 0, q_idx // bs, kv_idx // bs]
                return score

            self._device_cache[key] = score_mod
        return self._device_cache[key]

    def prefix(self, length: int | torch.SymInt) -> LayoutPrefix:
        """The layout's pairs ``(i, j)`` with ``i, j < length`` (``1 <= length <= q_len``), for a
        self-attention layout (``q_len == kv_len``, ``q_offset == 0``), as a :class:`LayoutPrefix`:
        what a traced graph with a symbolic length feeds the native kernel. Tensor ops of static
        or length-sized shapes only (no data-dependent shape), O(nnz + layout_heads * nq)."""
        if self.q_len != self.kv_len or self.q_offset:
            raise ValueError(
                f"prefix() needs a self-attention layout (q_len == kv_len, q_offset 0), got q_len={self.q_len}, "
                f"kv_len={self.kv_len}, q_offset={self.q_offset}"
            )
        if isinstance(length, int) and not 1 <= length <= self.q_len:
            raise ValueError(f"length must be in [1, q_len = {self.q_len}], got {length}")
        bs, hl, nq_max = self.block_size, self.layout_heads, self.nq
        # query (and key) tiles of the prefix, symbolic in a trace; not -(-length // bs): ONNX's integer
        # division truncates
        nq = (length + bs - 1) // bs
        with untraced():  # the query tile of each entry: layout data, a constant of the graph
            counts = self.row_ptr[1:] - self.row_ptr[:-1]  # [hl * nq_max]
            entry_qb = torch.repeat_interleave(torch.arange(hl * nq_max), counts) % nq_max  # [nnz]
        keep = (entry_qb < nq) & (self.col_idx < nq)  # [nnz]
        kept_before = F.pad(keep.cumsum(0), (1, 0))  # [nnz + 1]: kept entries before entry e
        # Row t of the prefix is tile t % nq of layout head t // nq; the last, t = hl * nq, maps to the
        # layout's end, row_ptr[hl * nq_max] = nnz. (One arange of size >= 2 and no broadcast against a
        # symbolic size: either would make a trace guard nq != 1.)
        t = torch.arange(hl * nq + 1)
        head = t // nq  # (no % by a symbolic int: torch.onnx cannot translate it)
        row_ptr = kept_before[self.row_ptr[head * nq_max + t - head * nq]]  # [hl * nq + 1]
        # kept entries first, in order, then the others: a permutation of the nnz entries
        dropped_before = torch.arange(self.nnz) - kept_before[:-1]
        dest = torch.where(keep, kept_before[:-1], kept_before[-1] + dropped_before)  # [nnz]

        def compact(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else torch.zeros_like(x).scatter(0, dest, x)

        return LayoutPrefix(
            q_len=length, kv_len=length, num_heads=self.num_heads, block_size=bs, layout_heads=hl, q_offset=0,
            row_ptr=row_ptr, col_idx=compact(self.col_idx), mask_id=compact(self.mask_id), masks=self.masks,
            log_weight=compact(self.log_weight), slopes=self.slopes,
        )  # fmt: skip

    def row_buckets(self, device: torch.device | str = "cpu") -> RowBuckets:
        """The rows of every head grouped by length, for backends that batch rows (see
        :class:`RowBuckets`). O(nnz) small tensors, built at compile time, cached per device."""
        key = str(torch.device(device))
        if key not in self._device_cache:
            self._device_cache[key] = self._device_cache["cpu"].to(device)
        return self._device_cache[key]


@dataclass(frozen=True, eq=False)
class LayoutPrefix:
    """A self-attention :class:`BlockLayout` cut to its first ``q_len = kv_len`` positions (see
    :meth:`BlockLayout.prefix`), in the fields the native kernel reads
    (:func:`sparseformer.kernels.cpu.attention`): the block CSR of the first ``nq = ceil(q_len /
    bs)`` query tiles of each layout head, keeping the entries with a key tile ``kb < nq``, in order.
    ``col_idx``, ``mask_id`` and ``log_weight`` keep the layout's ``nnz`` entries: those from
    ``row_ptr[-1]`` on are unused capacity, never read. The tile masks are the layout's; a tile that
    reaches past ``q_len`` is clipped by the kernel, which reads no query or key beyond the lengths.

    Its pairs equal those of the pattern compiled at ``q_len`` whenever the pattern's pairs of two
    positions do not depend on the length: band form (:func:`~sparseformer.band.band_of`), dense,
    causal. ``q_len`` may be a symbolic int (a traced length)."""

    q_len: int | torch.SymInt
    kv_len: int | torch.SymInt
    num_heads: int
    block_size: int
    layout_heads: int
    q_offset: int
    row_ptr: torch.Tensor  # int64 [layout_heads * nq + 1]
    col_idx: torch.Tensor  # int64 [nnz of the full layout]; entries from row_ptr[-1] on unused
    mask_id: torch.Tensor  # int64 [nnz of the full layout]
    masks: torch.Tensor  # bool [P, bs, bs]
    log_weight: torch.Tensor | None  # float64 [nnz of the full layout]
    slopes: torch.Tensor | None  # float64 [num_heads]


@dataclass(frozen=True)
class Bucket:
    """Rows of similar length, padded to the longest (``R`` entries)."""

    rows: torch.Tensor  # int64 [n]: row h * nq + qb over all num_heads heads
    kv_tiles: torch.Tensor  # int64 [n, R]: key tile of each entry (0 on padding entries)
    tile_ids: torch.Tensor  # int64 [n, R]: row of the tile table with the entry's element mask
    log_weight: torch.Tensor | None  # float64 [n, R]


@dataclass(frozen=True)
class RowBuckets:
    """Rows ``h * nq + qb`` of all heads, grouped so that a row with ``c`` visited tiles sits in
    the bucket of ``c`` in ``(2^(m-1), 2^m]``: padding at most doubles the work, and a few long
    rows (global tokens) never pad the many short ones. A bucket holds at most 2^24 scores per
    batch element (more rows make more buckets), which bounds a backend's peak memory. ``inverse`` puts the rows of the
    concatenated buckets back in order. ``tile_table bool [P + 2, bs, bs]``: row 0 all True
    (full tiles), row 1 all False (padding entries), then the layout's ``masks``."""

    buckets: tuple[Bucket, ...]
    inverse: torch.Tensor  # int64 [num_heads * nq]
    tile_table: torch.Tensor

    def to(self, device: torch.device | str) -> RowBuckets:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        buckets = tuple(
            Bucket(move(b.rows), move(b.kv_tiles), move(b.tile_ids), move(b.log_weight)) for b in self.buckets
        )
        return RowBuckets(buckets, move(self.inverse), move(self.tile_table))


@dataclass(frozen=True)
class FlexTables:
    """What FlexAttention's ``mask_mod`` and ``score_mod`` read for one layout, on one device, with
    FlexAttention tiles of ``block = f * bs`` tokens (``nqc = ceil(nq / f)``, ``nkc = ceil(nk / f)``,
    each grown to a power of two for a padded grid)."""

    block: int
    states: torch.Tensor  # uint8 [Hl, nqc, nkc]: 0 not visited, 1 partial, 2 full (every layout tile in it full)
    tile_ids: torch.Tensor  # int64 [Hl, nqc * f, nkc * f]: row of tile_table (0 full, 1 not visited, m + 2 mask m)
    tile_table: torch.Tensor  # bool [2^k >= P + 2, bs, bs]: row 0 all True, rows 1 and >= P + 2 all False
    slopes: torch.Tensor | None  # float32 [num_heads]
    log_weight: torch.Tensor | None  # float32 [Hl, nqc * f, nkc * f], 0 on tiles not visited


def _ordered(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``bool [B, H, nq, nk]`` -> FlexAttention's ``(num int32 [B, H, nq], indices int32 [B, H, nq, nk])``:
    per row, how many tiles are set and their columns first, in ascending order."""
    num = tiles.sum(-1, dtype=torch.int32)
    idx = torch.argsort((~tiles).to(torch.uint8), dim=-1, stable=True).to(torch.int32)
    return num, idx


def _row_buckets(layout: BlockLayout) -> RowBuckets:
    h, hl, nq, bs = layout.num_heads, layout.layout_heads, layout.nq, layout.block_size
    counts = layout.row_counts.flatten()  # [Hl * nq]
    starts = layout.row_ptr[:-1]
    ids = torch.where(layout.mask_id < 0, 0, layout.mask_id + 2)
    rows = torch.arange(h * nq)
    lrow = rows if hl > 1 else rows % nq  # the layout row each head's row reads
    c = counts[lrow]
    level = torch.ceil(torch.log2(c.clamp(min=1).double())).long()  # c in (2^(m-1), 2^m]
    buckets, order = [], []
    for m in level.unique().tolist():
        group = rows[level == m]
        r = max(int(c[group].max()), 1)
        # Rows per bucket: at most _BUCKET_SCORES scores per batch element, to bound peak memory.
        step = max(1, _BUCKET_SCORES // (r * bs * bs))
        for sel in group.split(step):
            slot = torch.arange(r)
            valid = slot[None, :] < c[sel][:, None]  # [n, R]
            entry = (starts[lrow[sel]][:, None] + slot[None, :]).clamp(max=max(layout.nnz - 1, 0))
            if layout.nnz:
                tiles = torch.where(valid, layout.col_idx[entry], 0)
                tid = torch.where(valid, ids[entry], 1)
            else:
                tiles, tid = torch.zeros_like(entry), torch.ones_like(entry)
            lw = None if layout.log_weight is None else torch.where(valid, layout.log_weight[entry], 0.0)
            buckets.append(Bucket(sel, tiles, tid, lw))
            order.append(sel)
    inverse = torch.empty(h * nq, dtype=torch.int64)
    inverse[torch.cat(order)] = torch.arange(h * nq)
    table = torch.cat([torch.ones(1, bs, bs, dtype=torch.bool), torch.zeros(1, bs, bs, dtype=torch.bool), layout.masks])
    return RowBuckets(tuple(buckets), inverse, table)


# -- compilation ----------------------------------------------------------------------------------


def refine(pattern: Pattern, shape: Shape, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Evaluate the element predicate on the PARTIAL tiles of ``states`` (``uint8 [Hp, nq, nk]``).

    Returns the exact states (a partial tile whose pairs all attend becomes FULL, one with none
    NONE), the distinct element masks ``bool [P, bs, bs]`` of the tiles still partial, and for
    each of those tiles (row-major order of ``(head, qb, kb)``) the index of its mask,
    ``int64 [n]``. Out-of-range keys and queries never attend; a key tile holding indices
    ``>= kv_len`` is never FULL.

    A shift-invariant pattern (pairs a function of the head and ``p - j`` only) gives equal masks
    to equal ``(head, tile offset, edge tile)``: the predicate runs once per such group.
    """
    bs = shape.block_size
    states = states.clone()
    if shape.kv_len % bs:
        last = states[:, :, -1]
        last[last == FULL] = PARTIAL
    hp, qb, kb = (states == PARTIAL).nonzero(as_tuple=True)
    if pattern._shift_invariant:
        key = torch.stack([hp, qb - kb, qb == shape.nq - 1, kb == shape.nk - 1], 1)
        key, group = torch.unique(key, dim=0, return_inverse=True)
        first = torch.full((key.shape[0],), hp.numel(), dtype=torch.int64).scatter_reduce_(
            0, group, torch.arange(hp.numel()), "amin"
        )
    else:
        group, first = torch.arange(hp.numel()), torch.arange(hp.numel())
    rh, rq, rk = hp[first], qb[first], kb[first]  # one representative tile per group
    masks = torch.empty(first.numel(), bs, bs, dtype=torch.bool)
    r = torch.arange(bs)
    step = max(1, _REFINE_CHUNK // (bs * bs))
    for h in rh.unique().tolist():
        (sel,) = (rh == h).nonzero(as_tuple=True)
        for s in range(0, sel.numel(), step):
            part = sel[s : s + step]
            i = rq[part, None, None] * bs + r[None, :, None]  # [n, bs, 1]
            j = rk[part, None, None] * bs + r[None, None, :]  # [n, 1, bs]
            m = pattern._pairs(shape, h, i, j) & (j < shape.kv_len) & (i < shape.q_len)
            masks[part] = m.expand(part.numel(), bs, bs)
    valid_q = (rq[:, None] * bs + r[None, :]) < shape.q_len  # [G, bs]
    any_ = masks.flatten(1).any(-1)
    all_ = (masks | ~valid_q[:, :, None]).flatten(1).all(-1) & (rk * bs + bs <= shape.kv_len)
    tile_any, tile_all = any_[group], all_[group]
    states[hp[tile_all], qb[tile_all], kb[tile_all]] = FULL
    states[hp[~tile_any], qb[~tile_any], kb[~tile_any]] = NONE
    partial = any_ & ~all_  # groups whose tiles stay partial
    uniq, index = _distinct(masks[partial])
    mask_of = torch.full((first.numel(),), -1, dtype=torch.int64)
    mask_of[partial] = index
    return states, uniq, mask_of[group[tile_any & ~tile_all]]


def _distinct(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct masks of ``bool [G, bs, bs]`` and each one's index among them."""
    packed = np.packbits(masks.flatten(1).numpy(), axis=1)
    seen: dict[bytes, int] = {}
    index = torch.tensor([seen.setdefault(row.tobytes(), len(seen)) for row in packed], dtype=torch.int64)
    first = torch.full((len(seen),), masks.shape[0], dtype=torch.int64).scatter_reduce_(
        0, index, torch.arange(masks.shape[0]), "amin"
    )
    return masks[first], index


def exact_states(pattern: Pattern, shape: Shape) -> torch.Tensor:
    """Exact tile states ``uint8 [Hp, nq, nk]`` of a resolved pattern."""
    return refine(pattern, shape, pattern._states(shape))[0]


def _check_block_size(block_size: object) -> int:
    check_int("block_size", block_size)
    if block_size & (block_size - 1) or not 16 <= block_size <= 512:  # type: ignore[operator]
        raise ValueError(f"block_size must be a power of two from 16 to 512, got {block_size}")
    return block_size  # type: ignore[return-value]


def compile_layout(
    pattern: Pattern,
    *,
    q_len: int,
    num_heads: int,
    block_size: int = 64,
    kv_len: int | None = None,
    causal: bool = False,
    q_offset: int | None = None,
) -> BlockLayout:
    """Compile ``pattern`` for one shape (cached: a layout is a pure function of its inputs)."""
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a sparseformer Pattern, got {type(pattern).__name__}")
    check_int("q_len", q_len)
    check_int("num_heads", num_heads)
    _check_block_size(block_size)
    kv_len = q_len if kv_len is None else check_int("kv_len", kv_len)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if q_offset is None:
        q_offset = kv_len - q_len
    elif isinstance(q_offset, bool) or not isinstance(q_offset, int):
        raise TypeError(f"q_offset must be an int or None, got {type(q_offset).__name__}")
    return _compile(pattern, q_len, num_heads, block_size, kv_len, causal, q_offset)


def _leaves(p: Pattern) -> list[Pattern]:
    """The non-composite parts of ``p``, depth first."""
    parts = getattr(p, "parts", None)
    return [x for c in parts for x in _leaves(c)] if parts else [p]


@functools.lru_cache(maxsize=128)
def _compile(
    pattern: Pattern, q_len: int, num_heads: int, bs: int, kv_len: int, causal: bool, q_offset: int
) -> BlockLayout:
    shape = Shape(q_len, kv_len, num_heads, bs, q_offset)
    root = Intersection.of(pattern, Causal()) if causal else pattern
    resolved = root._resolve(shape, None)
    states, masks, mask_of = refine(resolved, shape, resolved._states(shape))
    logw = resolved._logw(shape)
    slopes = resolved._slopes(shape)
    hl = num_heads if (states.shape[0] > 1 or (logw is not None and logw.shape[0] > 1)) else 1
    if hl > 1 and states.shape[0] == 1:
        # Per-head weights over shared tiles: the partial tiles repeat for every head.
        mask_of = mask_of.repeat(num_heads)
    states = states.expand(hl, -1, -1)
    keep = states != NONE
    hp, qb, kb = keep.nonzero(as_tuple=True)  # row-major: rows (h, qb), columns ascending
    mask_id = torch.full((hp.numel(),), -1, dtype=torch.int64)
    mask_id[states[hp, qb, kb] == PARTIAL] = mask_of
    counts = keep.flatten(0, 1).sum(-1)
    row_ptr = torch.zeros(hl * shape.nq + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(counts, 0)
    log_weight = None
    if logw is not None:
        lw = logw.expand(hl, -1, -1)[hp, qb, kb]
        log_weight = lw if bool((lw != 0).any()) else None
    if slopes is not None and not bool((slopes != 0).any()):
        slopes = None
    layout = BlockLayout(
        q_len=q_len,
        kv_len=kv_len,
        num_heads=num_heads,
        block_size=bs,
        causal=causal,
        q_offset=q_offset,
        layout_heads=hl,
        row_ptr=row_ptr,
        col_idx=kb.contiguous(),
        mask_id=mask_id,
        masks=masks.contiguous(),
        log_weight=log_weight,
        slopes=None if slopes is None else slopes.to(torch.float64).contiguous(),
        pattern=pattern,
    )
    layout._device_cache["cpu"] = _row_buckets(layout)
    return layout


def flops(layout: BlockLayout, head_dim: int, batch: int = 1) -> float:
    """Multiply-adds ×2 of the score and output products over the visited tiles."""
    return 4.0 * batch * layout.visited_tiles * layout.block_size**2 * head_dim


__all__ = ["BlockLayout", "LayoutPrefix", "compile_layout", "exact_states", "flops", "refine"]
