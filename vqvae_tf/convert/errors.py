"""The converter's one error type."""


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file, key or option."""
