"""vat: the Variational Tokenizer and next-scale autoregressive 3D generation (arXiv 2412.02202)."""

from vat.errors import MeshError, VatError

__version__ = "0.1.0"

__all__ = ["MeshError", "VatError", "__version__"]
