"""The error a person can fix. Below every module that refuses input (pipeline, options, photo, app),
so that each can raise it without importing the others."""


class InputError(ValueError):
    """Input the pipeline cannot use; the message, one line, says what to change."""
