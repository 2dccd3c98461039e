"""The training corpus: the held-out split shares no file with train; batches are a pure function
of (seed, step); ranks take disjoint slices of one global batch."""

from __future__ import annotations

import zlib

import pytest
import torch

from sparseformer.train import data


def test_split_by_file_is_disjoint_and_complete():
    train, held = data.load("train"), data.load("heldout")
    assert train.files and held.files
    assert not set(train.files) & set(held.files)
    assert sorted(train.files + held.files) == data.source_files()
    assert all(zlib.crc32(f.encode()) % 10 == 0 for f in held.files)
    assert all(zlib.crc32(f.encode()) % 10 != 0 for f in train.files)


def test_stream_is_the_files_bytes_with_end_markers(tmp_path):
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    files = {"a.py": b"x = 1\n", "pkg/b.py": b"def f():\n    pass\n", "pkg/tests/t.py": b"skip", "test/u.py": b"skip"}
    for rel, text in files.items():
        (tmp_path / rel).write_bytes(text)
    assert data.source_files(str(tmp_path)) == ["a.py", "pkg/b.py"]
    split = {"a.py": data.split_of("a.py"), "pkg/b.py": data.split_of("pkg/b.py")}
    for name in data.SPLITS:
        mine = [f for f in ("a.py", "pkg/b.py") if split[f] == name]
        if not mine:
            with pytest.raises(ValueError, match="no .* files"):
                data.load(name, str(tmp_path))
            continue
        corpus = data.load(name, str(tmp_path))
        assert corpus.files == tuple(mine)
        assert bytes(corpus.stream.tolist()) == b"".join(files[f] + b"\0" for f in mine)


def test_batches_are_a_pure_function_of_seed_and_step():
    corpus = data.load("train")
    a = data.batch(corpus, seed=3, step=7, batch_size=4, context=32)
    assert a.shape == (4, 33) and a.dtype == torch.int64
    assert torch.equal(a, data.batch(corpus, seed=3, step=7, batch_size=4, context=32))
    assert not torch.equal(a, data.batch(corpus, seed=3, step=8, batch_size=4, context=32))
    assert not torch.equal(a, data.batch(corpus, seed=4, step=7, batch_size=4, context=32))
    # every row is a run of consecutive stream bytes
    stream = corpus.stream.numpy().tobytes()
    assert all(stream.find(bytes(row.tolist())) >= 0 for row in a)


def test_ranks_take_disjoint_slices_of_the_global_batch():
    corpus = data.load("train")
    whole = data.batch(corpus, seed=0, step=2, batch_size=6, context=16)
    parts = [data.batch(corpus, seed=0, step=2, batch_size=6, context=16, rank=r, world_size=3) for r in range(3)]
    assert torch.equal(torch.cat(parts), whole)
    with pytest.raises(ValueError, match="batch_size must be a positive multiple of the world size 4"):
        data.batch(corpus, seed=0, step=0, batch_size=6, context=16, world_size=4)


def test_eval_contexts_are_fixed_and_span_the_split():
    corpus = data.load("heldout")
    a = data.eval_contexts(corpus, 5, 64)
    assert torch.equal(a, data.eval_contexts(corpus, 5, 64))
    stream = corpus.stream.long()
    assert torch.equal(a[0], stream[:65]) and torch.equal(a[-1], stream[-65:])


def test_bad_arguments_name_themselves():
    corpus = data.load("heldout")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("validation")
    with pytest.raises(ValueError, match="context must be <="):
        data.eval_contexts(corpus, 2, corpus.stream.numel())
    with pytest.raises(ValueError, match="context must be an int >= 1, got 0"):
        data.batch(corpus, seed=0, step=0, batch_size=2, context=0)
