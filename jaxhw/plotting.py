"""Every plot of the project, written to PNG files.

The figures are matplotlib ``Figure`` objects, not pyplot's: importing this module sets no
backend and leaves pyplot's figures alone, so a notebook that draws with pyplot after a
training cell still shows its pictures."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxhw.train.metrics import confusion


def _subplots(*grid: int, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` gives them, on a figure pyplot does not
    track (saved by :func:`_save`, never shown)."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*grid, **kwargs)


def _save(fig: Figure, path: str | os.PathLike) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str],
                   path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix (row = true class), with counts in the cells."""
    cm = confusion(labels, predictions, len(class_names))
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = _subplots(figsize=(7, 6))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(f"confusion matrix (accuracy {100 * np.trace(cm) / max(cm.sum(), 1):.2f} %)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_history(history: Sequence[dict], path: str | os.PathLike,
                 eval_split: str = "test") -> None:
    """Train / eval loss and eval accuracy per epoch; ``eval_split`` names the split the
    per-epoch evaluation used."""
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax1.plot(epochs, [r["eval_loss"] for r in history], "o-", label=eval_split)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [100 * r["eval_accuracy"] for r in history], "o-")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"{eval_split} accuracy (%)")
    _save(fig, path)


def plot_positional_encoding(seq_len: int, dim: int, path: str | os.PathLike) -> None:
    """The sinusoid table ``[seq_len, dim]`` as a heat map (position vs dimension)."""
    from jaxhw.models.transformer import positional_encoding_table

    table = positional_encoding_table(seq_len, dim)
    fig, ax = _subplots(figsize=(8, 4))
    im = ax.pcolormesh(table, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("position")
    ax.set_title(f"positional encoding ({seq_len} positions x {dim} dims)")
    fig.colorbar(im, ax=ax)
    _save(fig, path)


def _find(tree: dict, layer: str, kind: str) -> np.ndarray:
    """``[H, Lq, Lk]`` attention of the first example, from Transformer intermediates."""
    return np.asarray(tree[layer][kind]["attention"][0][0])


def plot_attention(intermediates: dict, src: np.ndarray, out: np.ndarray,
                   path: str | os.PathLike) -> None:
    """Every head's attention of the last encoder layer (source over source) and of the last
    decoder layer's cross-attention (output over source), for one sequence.

    ``src [S]`` source tokens, ``out [L]`` decoded tokens (0 = padding, cut off)."""
    encoders = sorted(k for k in intermediates if k.startswith("encoder"))
    decoders = sorted(k for k in intermediates if k.startswith("decoder"))
    enc = _find(intermediates, encoders[-1], "self_attention")
    cross = _find(intermediates, decoders[-1], "cross_attention")
    s = int(np.sum(src != 0))
    t = int(np.sum(out[1:] != 0))  # query positions that predicted a real token
    heads = enc.shape[0]
    fig, axes = _subplots(2, heads, figsize=(2.6 * heads, 5.4), squeeze=False)
    for h in range(heads):
        for row, (maps, rows, title, ylabel) in enumerate(
                ((enc, s, f"{encoders[-1]} self, head {h}", "source position"),
                 (cross, t, f"{decoders[-1]} cross, head {h}", "output position"))):
            ax = axes[row, h]
            ax.imshow(maps[h, :rows, :s], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.set_xticks(range(s), [str(v) for v in src[:s]], fontsize=6)
            ax.set_yticks(range(rows), [str(v) for v in (src[:s] if row == 0 else out[1:t + 1])],
                          fontsize=6)
            if h == 0:
                ax.set_ylabel(ylabel, fontsize=8)
    _save(fig, path)


def plot_sweep(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Test accuracy vs parameters and vs training time, and every setting's learning curve.

    ``rows``: dicts with ``setting``, ``parameters``, ``train_time_s``, ``test_accuracy`` and
    ``curve`` (test accuracy per epoch)."""
    fig, axes = _subplots(1, 3, figsize=(15, 4.2))
    for r in rows:
        acc = 100 * r["test_accuracy"]
        axes[0].scatter(r["parameters"], acc)
        axes[0].annotate(r["setting"], (r["parameters"], acc), fontsize=8)
        axes[1].scatter(r["train_time_s"], acc)
        axes[1].annotate(r["setting"], (r["train_time_s"], acc), fontsize=8)
        axes[2].plot(range(1, len(r["curve"]) + 1), [100 * a for a in r["curve"]], "o-",
                     label=r["setting"])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters")
    axes[1].set_xlabel("training time (s)")
    for ax in axes[:2]:
        ax.set_ylabel("test accuracy (%)")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("test accuracy (%)")
    axes[2].legend(fontsize=8)
    _save(fig, path)


def plot_vit_attention(images: np.ndarray, intermediates: dict, patch_size: int,
                       path: str | os.PathLike, titles: Sequence[str] = ()) -> None:
    """The class token's attention over the patches in the last block (mean over heads),
    upsampled to the image and drawn over it.

    ``images [K, H, W, 1]`` uint8; ``intermediates`` from ``model.apply(...,
    mutable=["intermediates"])`` of a VisionTransformer."""
    blocks = sorted((k for k in intermediates if k.startswith("blocks_")),
                    key=lambda k: int(k.split("_")[1]))
    attn = np.asarray(intermediates[blocks[-1]]["attn"]["attention"][0])  # [K, heads, N+1, N+1]
    cls = attn[:, :, 0, 1:].mean(axis=1)                                  # [K, N]
    k, h, w = images.shape[:3]
    grid = h // patch_size
    fig, axes = _subplots(2, k, figsize=(2.2 * k, 4.6), squeeze=False)
    for i in range(k):
        heat = np.kron(cls[i].reshape(grid, grid), np.ones((patch_size, patch_size)))
        axes[0, i].imshow(images[i, ..., 0], cmap="gray")
        axes[0, i].set_title(titles[i] if i < len(titles) else "", fontsize=7)
        axes[1, i].imshow(images[i, ..., 0], cmap="gray")
        axes[1, i].imshow(heat, cmap="inferno", alpha=0.6)
        for ax in axes[:, i]:
            ax.axis("off")
    axes[1, 0].set_title(f"[CLS] attention, {blocks[-1]}", fontsize=7, loc="left")
    _save(fig, path)
