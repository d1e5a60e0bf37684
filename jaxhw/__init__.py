"""jaxhw: a pure-functional JAX/Flax take on a deep-learning course assignment.

``jaxhw.load(run_folder)`` turns a trained run back into a predictor."""

__version__ = "0.1.0"


def load(folder, epoch="final"):
    """The predictor of a trained run folder with the weights of its final epoch, or of
    ``epoch="best"`` or a kept epoch's number (see :func:`jaxhw.predict.load`)."""
    from jaxhw.predict import load as load_run
    return load_run(folder, epoch)
