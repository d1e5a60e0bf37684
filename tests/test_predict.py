"""jaxhw.load and --predict: a trained run folder answers as its evaluation did."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhw
from jaxhw import cli
from jaxhw.data import load_split


def _check_against_evaluation(predictor, inputs, labels, results):
    """The predictor's accuracy and mean cross-entropy on the test split equal the run's
    final evaluation."""
    predictions = predictor.predict(inputs)
    names = list(predictor.inference.class_names)
    chosen = np.array([names.index(p.label) for p in predictions])
    assert np.mean(chosen == labels) == pytest.approx(results["test_accuracy"], abs=1e-9)
    nll = -np.mean([np.log(p.probabilities[names[y]]) for p, y in zip(predictions, labels)])
    assert nll == pytest.approx(results["test_loss"], rel=2e-4)
    for p in predictions:
        assert p.probability == max(p.probabilities.values())
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name, settings", [
    ("cifar_simple_cnn", dict(batch_size=8)),
    ("cifar_inception", dict(batch_size=16, widths="16,16,16", stem=8)),  # 6 test views
    ("vit_fashion_mnist", dict(batch_size=16, embed_dim=16, depth=1, num_heads=2)),
])
def test_an_image_run_predicts_what_it_evaluated(name, settings, tiny_data, tmp_path):
    import importlib
    module = importlib.import_module(f"experiments.{name}")
    folder = tmp_path / "run"
    results = module.run(module.Config(epochs=1, data_dir=str(tiny_data), compile_cache="off",
                                       checkpoint_dir=str(folder), **settings))
    dataset = "fashion_mnist" if name.startswith("vit") else "cifar10"
    test = load_split(dataset, "test", str(tiny_data))
    predictor = jaxhw.load(folder)
    assert type(predictor).__name__ == "ImagePredictor" and predictor.epoch == 1
    _check_against_evaluation(predictor, test.images, test.labels, results)


@pytest.mark.slow
def test_load_and_evaluate_use_the_final_weights_not_the_best_epoch(tiny_data, tmp_path,
                                                                    monkeypatch, capsys):
    """A run's results.json reports its final weights; jaxhw.load and --evaluate restore
    those even where an earlier epoch scored best per epoch (made so here), and
    ``epoch=`` picks another kept one."""
    from experiments import cifar_simple_cnn
    from jaxhw.train.checkpoint import CheckpointError, Checkpoints
    folder = tmp_path / "run"
    args = ["--batch-size", "8", "--data-dir", str(tiny_data), "--compile-cache", "off",
            "--checkpoint-dir", str(folder)]
    cifar_simple_cnn.main(args + ["--epochs", "2"])
    results = json.loads((folder / "results.json").read_text())
    monkeypatch.setattr(Checkpoints, "best_epoch", lambda self: 1)
    test = load_split("cifar10", "test", str(tiny_data))
    predictor = jaxhw.load(folder)
    assert predictor.epoch == 2
    if jax.default_backend() == "cpu":  # compiled as the run's steps: CPU convolutions
        from jaxhw.train.xla_options import CPU_CONV_OPTIONS
        assert predictor.inference.compiler_options == CPU_CONV_OPTIONS
    _check_against_evaluation(predictor, test.images, test.labels, results)
    assert jaxhw.load(folder, epoch="best").epoch == 1 == jaxhw.load(folder, epoch=1).epoch
    with pytest.raises(CheckpointError, match=r"epoch 7 is not kept.*'final', 'best'.*\[1, 2\]"):
        jaxhw.load(folder, epoch=7)
    capsys.readouterr()
    cifar_simple_cnn.main(args + ["--evaluate"])
    assert "epoch 2 (the latest)" in capsys.readouterr().out
    again = json.loads((folder / "results.json").read_text())
    assert again["test_accuracy"] == results["test_accuracy"]
    assert again["test_loss"] == pytest.approx(results["test_loss"], rel=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA CPU option")
def test_an_image_predictor_compiles_as_its_run_trained():
    """On a CPU the predictor's program keeps convolutions out of YNNPACK, as the run's
    training and evaluation steps do (XLA's default sends them there; BetterNet predicted
    1.34x slower so)."""
    from experiments import cifar_inception
    from jaxhw.inference import build
    from jaxhw.predict import ImagePredictor
    from jaxhw.train.xla_options import CPU_CONV_OPTIONS
    inference = build(cifar_inception.predictor(cifar_inception.Config(widths="16,16,16")))
    assert inference.compiler_options == CPU_CONV_OPTIONS
    x = jnp.zeros((4, 32, 32, 3), jnp.uint8)
    variables = inference.model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    predictor = ImagePredictor(inference, variables, "cifar_inception", None, 1)
    ours = predictor._forward.lower(variables, x).compile().as_text()
    default = jax.jit(predictor._logits).lower(variables, x).compile().as_text()
    assert ours.count('"__ynn_fusion"') < default.count('"__ynn_fusion"')


@pytest.mark.slow
def test_a_bert_run_predicts_what_it_evaluated(tiny_data, tiny_model_dir, tmp_path,
                                               monkeypatch):
    from experiments import bert_imdb
    monkeypatch.setenv("JAXHW_CACHE_DIR", str(tmp_path / "cache"))
    cfg = bert_imdb.Config(model=str(tiny_model_dir), data_dir=str(tiny_data), max_len=16,
                           buckets=2, batch_size=8, epochs=1, compile_cache="off",
                           checkpoint_dir=str(tmp_path / "run"))
    results = bert_imdb.run(cfg)
    texts, labels = bert_imdb.splits(cfg)["test"]
    predictor = jaxhw.load(tmp_path / "run")
    # The run's final evaluation lists the test reviews bucket by bucket; accuracy and
    # loss do not depend on the order.
    _check_against_evaluation(predictor, texts, labels, results)


@pytest.mark.slow
def test_a_sequence_run_decodes_as_its_evaluation(tmp_path):
    from experiments import transformer_toy
    cfg = transformer_toy.Config(task="reverse", epochs=1, train_limit=256, test_limit=32,
                                 dim=16, ffn_dim=32, seq_len=6, compile_cache="off",
                                 checkpoint_dir=str(tmp_path / "run"))
    results = transformer_toy.run(cfg)
    _, (test_src, test_tgt) = transformer_toy.sequences(transformer_toy.resolve(cfg))
    predictor = jaxhw.load(tmp_path / "run")
    sources = [[int(t) for t in row if t] for row in test_src]
    decoded = [p.label for p in predictor.predict(sources)]
    wanted = [[int(t) for t in row[1:] if t not in (0, 2)] for row in test_tgt]  # no BOS/EOS
    exact = np.mean([d == w for d, w in zip(decoded, wanted)])
    assert exact == pytest.approx(results["exact_sequence_accuracy"])


@pytest.mark.slow
def test_the_predict_flag_prints_a_table(tiny_data, tmp_path, capsys):
    from PIL import Image

    from experiments import cifar_simple_cnn, transformer_toy
    folder = tmp_path / "cnn"
    cifar_simple_cnn.run(cifar_simple_cnn.Config(epochs=1, batch_size=8, data_dir=str(tiny_data),
                                                 checkpoint_dir=str(folder), compile_cache="off"))
    image = load_split("cifar10", "test", str(tiny_data)).images[0]
    Image.fromarray(image).save(tmp_path / "plane.png")
    Image.fromarray(image).resize((64, 64)).save(tmp_path / "big.png")  # resized to 32x32
    expected = jaxhw.load(folder).predict(image[None])[0]
    capsys.readouterr()
    cifar_simple_cnn.main(["--checkpoint-dir", str(folder), "--predict",
                           str(tmp_path / "plane.png"), str(tmp_path / "big.png")])
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["input", "prediction", "probability"]
    assert out[3].split()[:3] == [str(tmp_path / "plane.png")[:45] + "..." if len(
        str(tmp_path / "plane.png")) > 48 else str(tmp_path / "plane.png"), expected.label,
        f"{100 * expected.probability:.1f}"]
    assert len(out) == 5
    seq = tmp_path / "seq"
    transformer_toy.run(transformer_toy.Config(
        task="reverse", epochs=1, train_limit=256, test_limit=32, dim=16, ffn_dim=32, seq_len=6,
        checkpoint_dir=str(seq), compile_cache="off"))
    capsys.readouterr()
    transformer_toy.main(["--task", "reverse", "--seq-len", "6", "--dim", "16", "--ffn-dim",
                          "32", "--checkpoint-dir", str(seq), "--predict", "5 6 7", "9,8"])
    table = capsys.readouterr().out.splitlines()
    decoded = [p.label for p in jaxhw.load(seq).predict([[5, 6, 7], [9, 8]])]
    assert table[3].split()[:3] == ["5", "6", "7"] and table[4].split()[:1] == ["9,8"]
    assert table[3].split()[3:] == [str(t) for t in decoded[0]]


@pytest.mark.slow
def test_the_predict_flag_on_a_review(tiny_data, tiny_model_dir, tmp_path, capsys,
                                      monkeypatch):
    from experiments import bert_imdb
    monkeypatch.setenv("JAXHW_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--model", str(tiny_model_dir), "--max-len", "16", "--buckets", "2",
            "--checkpoint-dir", str(tmp_path / "run")]
    bert_imdb.main(args + ["--data-dir", str(tiny_data), "--batch-size", "8", "--epochs", "1",
                           "--compile-cache", "off"])
    trained = capsys.readouterr().out
    # the per-epoch evaluation is on the validation split, and says so
    epoch_line = next(line for line in trained.splitlines() if line.startswith("epoch 1/1:"))
    assert "validation loss" in epoch_line and "validation accuracy" in epoch_line
    assert "test" not in epoch_line and "Test Accuracy:" in trained
    bert_imdb.main(args + ["--predict", "the movie was good", "awful plot"])
    lines = capsys.readouterr().out.splitlines()
    want = jaxhw.load(tmp_path / "run").predict(["the movie was good", "awful plot"])
    assert lines[3].startswith("the movie was good") and want[0].label in lines[3]
    assert lines[4].startswith("awful plot") and f"{100 * want[1].probability:.1f} %" in lines[4]


@pytest.mark.parametrize("make", ["missing", "empty", "seeds"])
def test_a_bad_folder_is_one_line(make, tmp_path, capsys):
    from experiments import cifar_simple_cnn
    folder = tmp_path / "run"
    if make != "missing":
        folder.mkdir()
    if make == "seeds":
        (folder / "results.json").write_text(json.dumps({"seeds": [{"seed": 0}, {"seed": 1}]}))
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: cifar_simple_cnn.main(["--checkpoint-dir", str(folder), "--predict",
                                               "x.png"]))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert {"missing": "does not exist", "empty": "holds no checkpoint",
            "seeds": "holds 2 seeds' runs"}[make] in err
