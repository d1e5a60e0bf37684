"""What a trained run needs to predict, as a JSON record of the run folder.

An experiment describes its trained network with :func:`image_record`, :func:`text_record`
or :func:`sequence_record`: the model family and its arguments (plain JSON), the compute
dtype, the input preprocessing, the labels and the XLA options its programs compile with.
The run folder keeps that record (``results.json`` and every checkpoint's meta, key
``predictor``), and :func:`build` turns it back into an :class:`Inference` with the
library's own model families, so :func:`jaxhw.load` needs nothing outside ``jaxhw``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax.numpy as jnp

from jaxhw.data.preprocess import Preprocess
from jaxhw.train.steps import identity_preprocess

KINDS = ("image", "text", "sequence")


@dataclasses.dataclass(frozen=True)
class Inference:
    """A trained network's model and how inputs reach it (the fields of its kind: images,
    texts or sequences)."""

    model: Any
    preprocess: Any = identity_preprocess  # (key, x, train) -> model inputs
    tta: int = 0                    # test-time views, as the run's evaluation used
    class_names: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] | None = None
    tokenizer: Any = None           # texts
    max_len: int = 0                # texts: tokens per review; sequences: decoded length
    truncation: str = "head+tail"
    boundaries: tuple[int, ...] = ()
    seq_len: int = 0                # sequences: longest source
    vocab: int = 0
    compiler_options: dict[str, str] | None = None  # XLA options of the run's programs


def _cnn(family: str, model_args: Callable[..., dict] = dict
         ) -> Callable[..., tuple[Any, Any]]:
    """A CNN family's builder; ``model_args`` turns the record's remaining JSON arguments
    into the model's."""
    def make(dtype, conv: str = "auto", act: str | None = None,
             bn: Sequence[Any] | None = None, **args):
        import functools

        import flax.linen as nn

        from jaxhw import ops
        from jaxhw.models import get_model
        layers = ops.layers(conv)
        args = model_args(**args)
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
        if act is not None:
            args["act"] = {"relu": nn.relu, "gelu": nn.gelu}[act]
        if bn is not None:  # momentum, epsilon, a learned scale
            args["norm"] = functools.partial(nn.BatchNorm, momentum=bn[0], epsilon=bn[1],
                                             use_scale=bn[2])
        return get_model(family, conv=layers.conv_module, max_pool=layers.max_pool,
                         dtype=dtype, **args), None
    return make


def _betternet_args(stem: int = 32, whiten: bool = False, head_pool: str = "avg",
                    head_scale: float = 1.0, head_bias: bool | None = None,
                    downsample: str = "stride", **args) -> dict:
    """A BetterNet record's JSON arguments as the model's: its stem and head functions."""
    from jaxhw.models.cnn import conv_stem, dense_head, whitening_stem
    if head_bias is not None and head_bias != (head_scale == 1.0):
        raise ValueError(f"a BetterNet head has a bias exactly when its scale is 1, got "
                         f"scale {head_scale} with bias {head_bias}")
    return {**args, "stem": whitening_stem if whiten else conv_stem(stem),
            "head": dense_head(head_pool, head_scale), "downsample": downsample}


def _vit(dtype, **args):
    from jaxhw.models.vit import VisionTransformer
    return VisionTransformer(**args, dtype=dtype), None


def _transformer(dtype, **args):
    from jaxhw.models.transformer import Transformer
    return Transformer(**args, dtype=dtype), None


def _bert(dtype, pretrained: str, **args):
    from jaxhw.models.bert import BertClassifier
    from jaxhw.pretrained import load_config_and_tokenizer
    bert_config, tokenizer = load_config_and_tokenizer(pretrained)
    return BertClassifier(bert_config, **args, dtype=dtype), tokenizer


# model family -> (dtype, **arguments) -> (flax module, tokenizer or None)
FAMILIES: dict[str, Callable[..., tuple[Any, Any]]] = {
    "simple_cnn": _cnn("simple_cnn"), "inception_cnn": _cnn("inception_cnn"),
    "betternet": _cnn("betternet", _betternet_args), "vit": _vit, "transformer": _transformer,
    "bert_classifier": _bert,
}


def _family(family: str) -> Callable[..., tuple[Any, Any]]:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def build_model(family: str, args: dict, dtype: Any = jnp.float32) -> Any:
    """The flax module of model ``family`` with the JSON ``args`` of a record."""
    return _family(family)(jnp.dtype(dtype), **args)[0]


def _record(kind: str, family: str, args: dict, dtype: Any,
            compiler_options: dict[str, str] | None, **fields: Any) -> dict:
    _family(family)  # an unknown family fails here, not when a predictor loads it
    return {"kind": kind, "family": family, "args": args, "dtype": jnp.dtype(dtype).name,
            "compiler_options": compiler_options, **fields}


def image_record(family: str, args: dict, dtype: Any, *, mean: Sequence[float],
                 std: Sequence[float], class_names: Sequence[str],
                 image_shape: Sequence[int], tta: int = 0,
                 compiler_options: dict[str, str] | None = None) -> dict:
    """An image classifier: uint8 ``[N, H, W, C]`` normalised by ``mean``/``std``, ``tta``
    test-time views (``jaxhw.data.tta_views``)."""
    return _record("image", family, args, dtype, compiler_options, mean=list(mean),
                   std=list(std), class_names=list(class_names),
                   image_shape=list(image_shape), tta=tta)


def text_record(family: str, args: dict, dtype: Any, *, class_names: Sequence[str],
                max_len: int, truncation: str, boundaries: Sequence[int],
                compiler_options: dict[str, str] | None = None) -> dict:
    """A text classifier: reviews tokenised by the pre-trained model's tokenizer, cut to
    ``max_len`` tokens (``truncation``) and to the length buckets ``boundaries``."""
    return _record("text", family, args, dtype, compiler_options,
                   class_names=list(class_names), max_len=max_len, truncation=truncation,
                   boundaries=list(boundaries))


def sequence_record(family: str, args: dict, dtype: Any, *, max_len: int, seq_len: int,
                    vocab: int, compiler_options: dict[str, str] | None = None) -> dict:
    """A sequence-to-sequence model decoded greedily up to ``max_len`` tokens, for sources
    of at most ``seq_len`` token ids below ``vocab``."""
    return _record("sequence", family, args, dtype, compiler_options, max_len=max_len,
                   seq_len=seq_len, vocab=vocab)


def build(record: dict) -> Inference:
    """The :class:`Inference` a record describes (see :func:`image_record` and the
    others); a record that does not fit this version raises KeyError or ValueError."""
    kind = record["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown predictor kind {kind!r}; one of {', '.join(KINDS)}")
    model, tokenizer = _family(record["family"])(jnp.dtype(record["dtype"]), **record["args"])
    options = record.get("compiler_options")
    if kind == "image":
        return Inference(model, Preprocess(tuple(record["mean"]), tuple(record["std"])),
                         tta=record["tta"], class_names=tuple(record["class_names"]),
                         image_shape=tuple(record["image_shape"]), compiler_options=options)
    if kind == "text":
        return Inference(model, tokenizer=tokenizer, class_names=tuple(record["class_names"]),
                         max_len=record["max_len"], truncation=record["truncation"],
                         boundaries=tuple(record["boundaries"]), compiler_options=options)
    return Inference(model, max_len=record["max_len"], seq_len=record["seq_len"],
                     vocab=record["vocab"], compiler_options=options)
