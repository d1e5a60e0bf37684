"""jaxhw's plots go to files without touching pyplot: a notebook's own figures still show."""

import os
import subprocess
import sys

PROBE = """
import matplotlib, matplotlib.pyplot as plt
before = matplotlib.get_backend()
from jaxhw.plotting import plot_history
plot_history([{"epoch": 1, "train_loss": 1.0, "eval_loss": 0.9, "eval_accuracy": 0.5},
              {"epoch": 2, "train_loss": 0.8, "eval_loss": 0.7, "eval_accuracy": 0.6}],
             PATH)
print(before, matplotlib.get_backend(), plt.get_fignums())
"""


def test_plots_keep_the_backend_and_leave_pyplot_alone(tmp_path):
    """A notebook's inline backend (here svg, any non-Agg one will do) survives importing
    jaxhw.plotting and drawing with it; the PNG is written and pyplot holds no figure."""
    path = tmp_path / "history.png"
    env = {**os.environ, "MPLBACKEND": "svg", "JAX_PLATFORMS": "cpu"}
    probe = PROBE.replace("PATH", repr(str(path)))
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, figures = done.stdout.split()[-3:]
    assert before == after == "svg" and figures == "[]"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
