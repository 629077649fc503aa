"""psml's small exception hierarchy. Every error carries a one-line message that names its cause."""


class PsmlError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""


class ConfigError(PsmlError, ValueError):
    """A setting or argument is invalid."""


class DataError(PsmlError):
    """A data set could not be read from the place the user named."""


class ExportError(PsmlError):
    """An ONNX export disagrees with its PyTorch model, or an ONNX file is missing or corrupt."""


class ManifestError(PsmlError):
    """A zoo manifest is missing, unreadable or does not match its schema."""


class TritonError(PsmlError):
    """The Triton server could not be started, reached or stopped."""


class PortInUseError(TritonError):
    """A port that a server was asked to bind is already taken."""


class ModelLoadError(TritonError):
    """Triton could not make a model READY."""
