"""Block diagrams of the networks, drawn from their configs (the notebooks show them).

A diagram is a top-to-bottom flow of stages. A stage is one box (a string) or a row of
boxes side by side (a list: parallel branches; None in a row: the branch passes on). Consecutive stages are joined by arrows:
one box to every box of a row, every box of a row to one box, and row to row box by box
(branches that go on in parallel). A skip is a curved arrow beside the flow (a residual
connection) from one stage to a later one.
"""

from __future__ import annotations

from typing import Sequence, Union

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

Stage = Union[str, Sequence[str]]

BOX_H, GAP = 0.62, 0.5  # a box's height and the space between stages (inches)
FILL = {"input": "#e8eef7", "output": "#e8f4ea"}


def _row(stage: Stage) -> list[str | None]:
    return [stage] if isinstance(stage, str) else list(stage)


def flow(stages: Sequence[Stage], skips: Sequence[tuple[int, int, str]] = (),
         title: str = "", width: float = 8.0) -> Figure:
    """The diagram of ``stages`` (top to bottom) with ``skips`` ``(from stage, to stage,
    label)``; the first stage is drawn as the input, the last as the output."""
    rows = [_row(s) for s in stages]
    height = len(rows) * (BOX_H + GAP) + (0.5 if title else 0.1)
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    top = height - (0.5 if title else 0.1)
    if title:
        ax.text(width / 2, height - 0.25, title, ha="center", va="center", fontsize=12,
                weight="bold")
    usable = width - 1.4  # room on the right for the skips
    centres: list[list[tuple[float, float]]] = []
    for k, row in enumerate(rows):
        y = top - k * (BOX_H + GAP) - BOX_H / 2
        box_w = min(usable / len(row) - 0.15, 5.0)
        xs = [0.2 + usable * (j + 0.5) / len(row) for j in range(len(row))]
        fill = FILL["input"] if k == 0 else FILL["output"] if k == len(rows) - 1 else "#f7f7f7"
        for x, text in zip(xs, row):
            if text is None:  # the branch passes this stage unchanged
                ax.plot([x, x], [y - BOX_H / 2, y + BOX_H / 2], color="#333333", lw=1)
                continue
            ax.add_patch(FancyBboxPatch((x - box_w / 2, y - BOX_H / 2), box_w, BOX_H,
                                        boxstyle="round,pad=0.02,rounding_size=0.08",
                                        fc=fill, ec="#555555", lw=1))
            ax.text(x, y, text, ha="center", va="center",
                    fontsize=9 if len(row) < 4 else 8, wrap=True)
        centres.append([(x, y) for x in xs])
    for upper, lower in zip(centres, centres[1:]):
        pairs = (list(zip(upper, lower)) if len(upper) == len(lower)
                 else [(a, b) for a in upper for b in lower])
        for (x0, y0), (x1, y1) in pairs:
            ax.add_patch(FancyArrowPatch((x0, y0 - BOX_H / 2), (x1, y1 + BOX_H / 2),
                                         arrowstyle="-|>", mutation_scale=12, lw=1,
                                         color="#333333"))
    for first, last, label in skips:
        y0, y1 = centres[first][0][1], centres[last][0][1]
        x = 0.2 + usable + 0.1
        ax.add_patch(FancyArrowPatch((x - 0.1, y0), (x - 0.1, y1),
                                     connectionstyle="arc3,rad=-0.5", arrowstyle="-|>",
                                     mutation_scale=12, lw=1.2, color="#c0392b"))
        ax.text(x + 0.35, (y0 + y1) / 2, label, ha="center", va="center", fontsize=8,
                color="#c0392b", rotation=90)
    return fig
