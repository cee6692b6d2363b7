"""One exception type per failure class; the CLI prints each as one line and exits non-zero.

Every message should say what went wrong, where (file, option, dataset), and what to do.
"""


class MeddistillError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 2


class ConfigError(MeddistillError):
    """An unknown name, an impossible setting or a malformed config file."""


class DatasetNotFoundError(MeddistillError):
    """A dataset file or folder is missing."""


class DatasetCorruptError(MeddistillError):
    """A dataset file exists but cannot be read, has the wrong md5 or the wrong shapes."""


class DownloadError(MeddistillError):
    """Fetching a dataset from its official URL failed."""


class ExpertBufferError(MeddistillError):
    """An expert-trajectory buffer is missing, corrupt or made for another dataset or network."""


class ArtifactError(MeddistillError):
    """A saved artifact (synthetic set, checkpoint) is missing, corrupt or incompatible."""


class NumericalError(MeddistillError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3
