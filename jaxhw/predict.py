"""Use a trained run: :func:`load` turns a run folder back into a predictor.

    import jaxhw
    predictor = jaxhw.load("checkpoints/cifar_inception")
    predictor.predict(images)        # uint8 [N, 32, 32, 3] or image files -> class, probability
    jaxhw.load("checkpoints/bert_imdb").predict(["A wonderful film."])
    jaxhw.load("checkpoints/transformer_reverse").predict([[5, 6, 7]])  # -> [[7, 6, 5]]

The model is rebuilt from the predictor record the run saved (``results.json``, else its
latest checkpoint; ``jaxhw.inference``) and the parameters of its final epoch (the weights its ``results.json``
reports; ``epoch="best"`` or a number for another kept one) are restored, without an
optimizer.
Images and reviews go through the preprocessing, test-time views and tokenisation the
run's evaluation used, so a predictor gives the evaluation's predictions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw.files import read_json
from jaxhw.inference import Inference, build
from jaxhw.train.divergence import diverged_run
from jaxhw.train.checkpoint import Checkpoints, CheckpointError


class RunFolderError(CheckpointError):
    """A folder that is not (or no longer) a run folder jaxhw can load."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One input's answer: ``label`` (a class name, or the decoded tokens), its
    ``probability`` (None for sequences) and every class's probability."""

    label: Any
    probability: float | None = None
    probabilities: dict[str, float] | None = None


def _saved_run(folder: Path) -> tuple[str, dict, Checkpoints]:
    """(experiment name, predictor record, checkpoints) of a run folder, or one clear
    error."""
    if not folder.is_dir():
        raise RunFolderError(f"{folder} does not exist; pass the --checkpoint-dir of a "
                             f"finished run")
    results_file = folder / "results.json"
    results = read_json(results_file, "run the experiment with --evaluate and this "
                                      "--checkpoint-dir to write it again from the "
                                      "checkpoint") if results_file.is_file() else {}
    if not isinstance(results, dict):
        raise RunFolderError(f"{results_file} is not a run's results (a JSON object); pass "
                             f"the --checkpoint-dir of a run")
    diverged = diverged_run(folder, results, "has no final weights")
    if diverged:
        raise RunFolderError(diverged)
    if "seeds" in results and "history" not in results:
        seeds = [f"seed_{r['seed']}" for r in results["seeds"]]
        raise RunFolderError(f"{folder} holds {len(seeds)} seeds' runs; load one of them "
                             f"({', '.join(str(folder / s) for s in seeds)})")
    checkpoints = Checkpoints(folder)
    if not checkpoints.epochs():
        checkpoints.close()
        raise RunFolderError(f"{folder} holds no checkpoint: not a trained run folder "
                             f"(train it first, or pass the --checkpoint-dir of a run)")
    name, record = results.get("experiment"), results.get("predictor")
    if name is None or record is None:  # an interrupted run: its checkpoint's meta
        meta = checkpoints.meta()
        name, record = meta.get("experiment"), meta.get("predictor")
    if name is None or record is None:
        checkpoints.close()
        raise RunFolderError(f"{folder} was written by an older jaxhw (it keeps no "
                             f"predictor record); retrain it")
    return name, record, checkpoints


def _variables(checkpoints: Checkpoints, epoch: int | str) -> tuple[dict, int]:
    """The ``params`` (and ``batch_stats``) of the kept ``epoch`` (see
    :meth:`Checkpoints.pick`), restored without a template: only what a forward pass
    needs."""
    try:
        epoch = checkpoints.pick(epoch)
        state, _ = checkpoints.restore(None, epoch)
    finally:
        checkpoints.close()
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return variables, epoch


def load(folder: str | Path, epoch: int | str = "final") -> "Predictor":
    """The predictor of the run in ``folder`` (a ``--checkpoint-dir``; with ``--seeds``,
    one ``seed_<s>`` folder): an :class:`ImagePredictor`, :class:`TextPredictor` or
    :class:`SequencePredictor`, with the parameters of ``epoch``: ``"final"`` (the
    latest kept, whose evaluation the run's ``results.json`` reports), ``"best"`` (the
    best per-epoch evaluation) or a kept epoch's number."""
    folder = Path(folder).expanduser().resolve()
    name, record, checkpoints = _saved_run(folder)
    try:
        inference = build(record)
    except (KeyError, TypeError, ValueError) as e:
        checkpoints.close()
        raise RunFolderError(f"{folder}: its predictor record does not fit this jaxhw version "
                             f"({type(e).__name__}: {e}); retrain it") from None
    variables, epoch = _variables(checkpoints, epoch)
    cls = {"image": ImagePredictor, "text": TextPredictor,
           "sequence": SequencePredictor}[record["kind"]]
    return cls(inference, variables, name=name, folder=folder, epoch=epoch)


@dataclasses.dataclass
class Predictor:
    """A model with restored variables. ``inference``: the model, how inputs are prepared
    for it, and the XLA options its programs compile with (``jaxhw.inference``)."""

    inference: Inference
    variables: dict
    name: str
    folder: Path
    epoch: int

    def __post_init__(self):
        self._forward = jax.jit(self._logits, compiler_options=self.inference.compiler_options)

    def _logits(self, variables, x):
        from jaxhw.train.steps import eval_logits
        inf = self.inference
        x = inf.preprocess(jax.random.key(0), x, False)
        return eval_logits(inf.model, variables, x, inf.tta).astype(jnp.float32)

    def _classify(self, x) -> list[Prediction]:
        probs = np.asarray(jax.nn.softmax(self._forward(self.variables, x), axis=-1))
        names = self.inference.class_names
        return [Prediction(names[int(p.argmax())], float(p.max()),
                           {n: float(v) for n, v in zip(names, p)}) for p in probs]

    def table(self, inputs: Sequence[Any], predictions: Sequence[Prediction]) -> str:
        rows = [(str(i) if len(str(i)) <= 48 else str(i)[:45] + "...",
                 " ".join(map(str, p.label)) if isinstance(p.label, list) else str(p.label),
                 "" if p.probability is None else f"{100 * p.probability:.1f} %")
                for i, p in zip(inputs, predictions)]
        head = ("input", "prediction", "probability")
        widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(head)]
        line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


class ImagePredictor(Predictor):
    """Images -> class names with probabilities."""

    def predict(self, images: np.ndarray | Sequence[str | Path]) -> list[Prediction]:
        """``images``: uint8 ``[N, H, W, C]`` (or ``[N, H, W]`` for one channel) at the
        training size, or image files (converted to the training channels and resized)."""
        shape = self.inference.image_shape  # [H, W, C]
        if not isinstance(images, np.ndarray):
            images = np.stack([_read_image(p, shape) for p in images])
        images = np.asarray(images)
        if images.ndim == 3 and shape[2] == 1:
            images = images[..., None]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
            raise ValueError(f"expected uint8 images [N, {shape[0]}, {shape[1]}, {shape[2]}], "
                             f"got an array of shape {list(images.shape)}")
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels (0-255), got {images.dtype}")
        return self._classify(jnp.asarray(images))


def _read_image(path: str | Path, shape: Sequence[int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image = image.convert("L" if shape[2] == 1 else "RGB")
            if image.size != (shape[1], shape[0]):
                image = image.resize((shape[1], shape[0]), Image.BILINEAR)
            pixels = np.asarray(image, np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return pixels.reshape(shape)


class TextPredictor(Predictor):
    """Review texts -> sentiment with its probability, tokenised and truncated (and cut to
    the length bucket) as in training."""

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        from jaxhw.data.text import bucket_by_length, tokenize
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("expected a list of review texts")
        inf = self.inference
        ids, mask = tokenize(list(texts), inf.tokenizer, inf.max_len, inf.truncation,
                             cache=False)
        order = np.arange(len(texts))
        out: dict[int, Prediction] = {}
        for b_ids, b_mask, b_order in bucket_by_length(ids, mask, order, inf.boundaries):
            for k, p in zip(b_order, self._classify((jnp.asarray(b_ids), jnp.asarray(b_mask)))):
                out[int(k)] = p
        return [out[k] for k in range(len(texts))]


class SequencePredictor(Predictor):
    """Token sequences -> the greedy decoding of the trained Transformer."""

    def __post_init__(self):
        from jaxhw.data.toy import BOS, EOS
        from jaxhw.models.transformer import greedy_decode
        inf = self.inference
        self._decode = jax.jit(lambda params, src: greedy_decode(inf.model, params, src, BOS,
                                                                 EOS, inf.max_len),
                               compiler_options=inf.compiler_options)

    def predict(self, sequences: Sequence[Sequence[int]]) -> list[Prediction]:
        """``sequences``: lists of token ids in ``[3, vocab)``, at most ``--seq-len`` long."""
        from jaxhw.data.toy import EOS, FIRST
        inf = self.inference
        src = np.zeros((len(sequences), inf.seq_len), np.int32)
        for i, seq in enumerate(sequences):
            seq = [int(t) for t in seq]
            if not 1 <= len(seq) <= inf.seq_len or not all(FIRST <= t < inf.vocab for t in seq):
                raise ValueError(f"sequence {i} must hold 1 to {inf.seq_len} token ids in "
                                 f"[{FIRST}, {inf.vocab}), got {seq}")
            src[i, :len(seq)] = seq
        out = np.asarray(self._decode(self.variables["params"], jnp.asarray(src)))
        results = []
        for row in out[:, 1:]:  # after BOS, up to EOS
            tokens = [int(t) for t in row]
            results.append(Prediction(tokens[:tokens.index(EOS)] if EOS in tokens else tokens))
        return results


def parse_inputs(kind: str, items: Sequence[str]) -> list:
    """``--predict`` arguments as a predictor's inputs: image paths, texts, or sequences of
    space- or comma-separated token ids."""
    if kind != "sequence":
        return list(items)
    try:
        return [[int(t) for t in item.replace(",", " ").split()] for item in items]
    except ValueError:
        raise ValueError(f"--predict takes token ids separated by spaces, got {items}") from None


def print_predictions(folder: str | Path, items: Sequence[str]) -> list[Prediction]:
    """What ``--predict`` does: load the run in ``folder``, predict ``items``, print a
    table."""
    from jaxhw.config import ConfigError
    predictor = load(folder)
    kind = {ImagePredictor: "image", TextPredictor: "text",
            SequencePredictor: "sequence"}[type(predictor)]
    try:
        predictions = predictor.predict(parse_inputs(kind, items))
    except ValueError as e:
        raise ConfigError(f"--predict: {e}") from None
    print(f"{predictor.name}: {predictor.folder}, epoch {predictor.epoch} (the latest)")
    print(predictor.table(items, predictions))
    return predictions
