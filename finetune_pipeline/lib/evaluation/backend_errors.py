"""The one error every eval backend raises when it cannot run here or cannot reach its model."""


class BackendError(RuntimeError):
    """A backend cannot run here or cannot reach its model; the message says what to do."""
