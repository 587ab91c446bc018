"""sslray: find the best self-supervised image-pretraining recipe and scale it out."""

__version__ = "0.1.0"

from sslray import rules as _rules  # noqa: E402,F401  (registers the config rules that need the registries)


def load_encoder(path, device="cpu"):
    """The trained encoder of a checkpoint file or run directory, in eval mode (see sslray.checkpoint)."""
    from sslray.checkpoint import load_encoder as _load

    return _load(path, device)


__all__ = ["load_encoder", "__version__"]
