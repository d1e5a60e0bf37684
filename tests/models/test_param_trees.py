"""Every model's parameter and batch-norm trees, at initialisation, equal the ones recorded
in ``param_trees.json``: the same paths, shapes and initial values. A change in how the
modules are written that keeps these keeps every trained figure. ``python -m
tests.models.test_param_trees --write NAME`` records a case again (no name: every case), only
when a change is meant to move it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

RECORD = Path(__file__).with_name("param_trees.json")

# name -> (model family, JSON arguments, input shapes)
CASES = {
    "simple_cnn": ("simple_cnn", {"conv": "lax"}, [(2, 32, 32, 3)]),
    "inception_cnn": ("inception_cnn", {"conv": "lax"}, [(2, 32, 32, 3)]),
    "betternet_cpu_preset": ("betternet", dict(
        conv="lax", stem=32, widths=[64, 96, 192], blocks=[0, 1, 1], bn=[0.9, 1e-5, True],
        act="relu", whiten=True, head_pool="avg", head_scale=1.0,
        head_bias=True), [(2, 32, 32, 3)]),
    "betternet_gpu_preset": ("betternet", dict(
        conv="lax", stem=32, widths=[64, 128, 256], blocks=[0, 1, 2], downsample="pool",
        bn=[0.6, 1e-12, False], act="gelu", whiten=True, head_pool="max", head_scale=1 / 9,
        head_bias=False), [(2, 32, 32, 3)]),
    "betternet_stride_layout": ("betternet", dict(
        conv="lax", stem=32, widths=[96, 256, 256], blocks=[1, 1, 1], bn=[0.6, 1e-12, False],
        act="gelu", whiten=True, head_pool="max", head_scale=1 / 9,
        head_bias=False), [(2, 32, 32, 3)]),
    "betternet_3x3_stem": ("betternet", dict(conv="lax", widths=[32, 64, 64],
                                             blocks=[1, 2, 1]), [(2, 32, 32, 3)]),
    "vit": ("vit", dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32,
                        depth=2, num_heads=4, mlp_ratio=2.0), [(2, 28, 28, 1)]),
    "transformer": ("transformer", dict(input_lib_size=20, output_lib_size=20, dim=32,
                                        head_num=4, layer_num=2, ffn_dim=64,
                                        seq_len_max=12), "tokens"),
}


def _fingerprint(tree) -> dict:
    """path -> [shape, sum, sum of squares] of every leaf."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        a = np.asarray(leaf, np.float64)
        out[jax.tree_util.keystr(path)] = [list(a.shape), float(a.sum()), float((a * a).sum())]
    return out


def tree(name: str) -> dict:
    """The fingerprint of case ``name``'s variables at initialisation (key 0)."""
    from jaxhw.inference import build_model
    family, args, shapes = CASES[name]
    model = build_model(family, args)
    inputs = ([jnp.ones((2, 10), jnp.int32), jnp.ones((2, 9), jnp.int32)]
              if shapes == "tokens" else [jnp.linspace(0, 1, np.prod(s)).reshape(s)
                                          for s in shapes])
    variables = jax.jit(model.init)(jax.random.key(0), *inputs)
    return {k: _fingerprint(v) for k, v in variables.items()}


def trees() -> dict:
    return {name: tree(name) for name in CASES}


def test_every_case_is_recorded():
    assert sorted(json.loads(RECORD.read_text())) == sorted(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_parameter_trees_are_the_recorded_ones(name):
    recorded, now = json.loads(RECORD.read_text())[name], tree(name)
    assert now.keys() == recorded.keys()
    for collection, leaves in recorded.items():
        assert now[collection].keys() == leaves.keys(), collection
        for path, (shape, total, squares) in leaves.items():
            got = now[collection][path]
            assert got[0] == shape, path
            assert got[1] == pytest.approx(total, rel=1e-6, abs=1e-6), path
            assert got[2] == pytest.approx(squares, rel=1e-6, abs=1e-6), path


if __name__ == "__main__" and "--write" in sys.argv:
    # --write [NAME ...]: record the named cases (default: all), keep the others' records
    names = sys.argv[sys.argv.index("--write") + 1:] or list(CASES)
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    record = {k: v for k, v in record.items() if k in CASES}
    record.update({name: tree(name) for name in names})
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {', '.join(names)} to {RECORD}")
