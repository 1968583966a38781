"""gradbrain: forward activations and backpropagated gradients of vision models, mapped onto fMRI and MEG."""

__version__ = "0.1.0"
