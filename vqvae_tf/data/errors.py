"""The one error type of the data layer."""


class DataError(ValueError):
    """Raised for a dataset that cannot be read: unknown name, bad split, bad or missing files."""
