import time

import jax
import numpy as np
import optax
import pytest

from jaxhw.data.text import bucket_by_length, clean, tokenize, truncate
from jaxhw import pretrained as loading
from jaxhw.models.bert import BertClassifier
from jaxhw.pretrained import ModelLoadError, load_pretrained
from jaxhw.train import Trainer, replicate

@pytest.mark.slow
def test_load_from_a_local_directory(tiny_model_dir):
    model, tokenizer = load_pretrained(str(tiny_model_dir))
    assert model.config.hidden_size == 16 and tokenizer.is_fast
    assert tokenizer("good movie")["input_ids"] == [2, 5, 7, 3]


def test_directory_without_weights_is_refused(tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="pickled PyTorch weights are not loaded"):
        load_pretrained(str(tmp_path))


def test_offline_hub_name_fails_fast_naming_alternatives(monkeypatch):
    monkeypatch.setattr(loading, "reachable", lambda url, **kw: False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="--model minilm.*local directory"):
        load_pretrained("some-org/not-cached-bert")
    assert time.perf_counter() - start < 5


def test_truncation_strategies():
    ids = list(range(10))
    assert truncate(ids, 4, "head") == [0, 1, 2, 3]
    assert truncate(ids, 4, "tail") == [6, 7, 8, 9]
    assert truncate(ids, 8, "head+tail") == [0, 1, 4, 5, 6, 7, 8, 9]
    assert truncate(ids[:3], 4, "tail") == [0, 1, 2]
    assert clean("great<br /><br />plot") == "great  plot"


@pytest.mark.slow
def test_tokenize_shapes_cache_and_buckets(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXHW_CACHE_DIR", str(tmp_path))
    _, tokenizer = load_pretrained(str(tiny_model_dir))
    texts = ["good movie", "the plot was awful<br />bad bad bad", "a"]
    ids, mask = tokenize(texts, tokenizer, max_len=6, how="head+tail")
    assert ids.shape == mask.shape == (3, 6) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[0], [2, 5, 7, 3, 0, 0])
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 0, 0])
    # 8 tokens cut to 4: the first (head = 1) and the last three
    np.testing.assert_array_equal(ids[1], [2, 11, 6, 6, 6, 3])
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 1
    again, _ = tokenize(texts, tokenizer, max_len=6, how="head+tail")
    np.testing.assert_array_equal(again, ids)

    buckets = bucket_by_length(ids, mask, np.array([1, 0, 1]), boundaries=[3, 6])
    assert [b[0].shape for b in buckets] == [(1, 3), (2, 6)]
    np.testing.assert_array_equal(buckets[0][2], [1])
    with pytest.raises(ValueError, match="must equal the sequence length"):
        bucket_by_length(ids, mask, np.zeros(3), boundaries=[3, 5])


@pytest.mark.slow
@pytest.mark.parametrize("head", ["pooled", "mean_cls"])
def test_heads_and_a_training_step_lowers_the_loss(tiny_model_dir, head, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXHW_CACHE_DIR", str(tmp_path))
    pretrained, tokenizer = load_pretrained(str(tiny_model_dir))
    texts = ["good great movie", "bad awful plot", "great good", "awful bad"] * 4
    labels = np.array([1, 0, 1, 0] * 4)
    ids, mask = tokenize(texts, tokenizer, max_len=8)
    trainer = Trainer(BertClassifier(pretrained.config, head, head_hidden=8), optax.adam(1e-3))
    state = trainer.init_state(jax.random.key(0), (ids[:1], mask[:1]))
    state = state.replace(params=replicate({**state.params, "bert": pretrained.params}, trainer.mesh))
    np.testing.assert_array_equal(  # the pre-trained encoder weights are in place
        state.params["bert"]["embeddings"]["word_embeddings"]["embedding"],
        pretrained.params["embeddings"]["word_embeddings"]["embedding"])
    data = trainer.put((ids, mask), labels)
    logits = trainer.model.apply(state.variables(), ids, mask)
    assert logits.shape == (16, 2)
    before = trainer.evaluate(state, data).loss
    for epoch in range(5):
        state, _ = trainer.train_epoch(state, data, 8, jax.random.key(epoch), progress=False)
    assert trainer.evaluate(state, data).loss < before
