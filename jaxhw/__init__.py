"""jaxhw: a pure-functional JAX/Flax take on a deep-learning course assignment."""

__version__ = "0.1.0"
