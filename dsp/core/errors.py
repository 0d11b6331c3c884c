"""The one error type a block raises; its message is what the user sees in Studio."""


class ConfigurationError(ValueError):
    """The request cannot be processed as given (bad parameter, window or input).

    The message must say what was expected, in words a Studio user understands.
    """
