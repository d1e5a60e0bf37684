"""Model families, one file each; :func:`get_model` builds one by name."""

from jaxhw.models.cnn import BetterNet, Inception, InceptionCNN, ResidualBlock, SimpleCNN

MODELS = {"simple_cnn": SimpleCNN, "inception_cnn": InceptionCNN, "betternet": BetterNet}


def get_model(name: str, **kwargs):
    """Build a registered model by name; unknown names list the known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["BetterNet", "Inception", "InceptionCNN", "MODELS", "ResidualBlock", "SimpleCNN",
           "get_model"]
