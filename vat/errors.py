"""The error types the library raises for bad input; each message says what is wrong."""


class VatError(Exception):
    """Base class of every error vat raises on purpose (bad input, missing weights, ...)."""


class MeshError(VatError, ValueError):
    """A file or array that should be a usable triangle mesh is not (corrupt, empty, NaN, too large)."""
