"""jaxhw: a pure-functional JAX/Flax take on a deep-learning course assignment.

``jaxhw.load(run_folder)`` turns a trained run back into a predictor."""

__version__ = "0.1.0"


def load(folder):
    """The predictor of a trained run folder (see :mod:`jaxhw.predict`)."""
    from jaxhw.predict import load as load_run
    return load_run(folder)
