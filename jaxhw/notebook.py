"""What the notebooks share besides their setup: the recipe for the runtime's device, and a
module's whole source on the page."""

from __future__ import annotations

import inspect
from typing import Sequence

import jax


def recipe(gpu: Sequence[str], cpu: Sequence[str], args: Sequence[str] | None = None
           ) -> list[str]:
    """The flags a training cell passes: ``args`` when the parameters cell sets them, else
    ``gpu`` on a GPU runtime and ``cpu`` on any other, said in one line."""
    if args is not None:
        print(f"the flags of the parameters cell: {' '.join(args) or '(the defaults)'}")
        return list(args)
    device = jax.devices()[0].device_kind
    if jax.default_backend() == "gpu":
        print(f"GPU runtime ({device}): the GPU recipe, {' '.join(gpu) or '(the defaults)'}")
        return list(gpu)
    print(f"no GPU in this runtime ({device}): the CPU recipe, "
          f"{' '.join(cpu) or '(the defaults)'}, instead of the GPU one "
          f"({' '.join(gpu)})")
    return list(cpu)


def source(*objects: object) -> str:
    """The whole source of each of ``objects`` (classes, functions), as a Markdown Python
    block."""
    return "\n".join(f"```python\n{inspect.getsource(o).rstrip()}\n```" for o in objects)


def show_source(*objects: object) -> None:
    """Display :func:`source` in the notebook."""
    from IPython.display import Markdown, display
    display(Markdown(source(*objects)))


def show_figure(fig) -> None:
    """Display a matplotlib ``Figure`` made without pyplot (a diagram) as a PNG image."""
    import io

    from IPython.display import Image, display
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    display(Image(data=buffer.getvalue(), format="png"))
