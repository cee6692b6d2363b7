"""One exception type per failure class; the CLI prints each as one line and exits non-zero.

Every message should say what went wrong, where (file, option, dataset), and what to do.
"""

from __future__ import annotations


class MeddistillError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 2


class ConfigError(MeddistillError):
    """An unknown name, an impossible setting or a malformed config file."""


class OptionError(ConfigError):
    """An option with an impossible value, named by the dotted path a user types.

    A config class only knows its usual section (`train`, `eval`, `match`); `at(section)` names
    the same option where this config was nested (`experts.train.lr`, `match.eval.batch_size`).
    """

    def __init__(self, section: str, name: str, problem: str) -> None:
        self.section, self.name, self.problem = section, name, problem
        super().__init__(f"option {self.option} {problem}")

    @property
    def option(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    def at(self, section: str) -> OptionError:
        return OptionError(section, self.name, self.problem)


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


class RankLost(MeddistillError):
    """Another rank of a torchrun job stopped (killed, out of memory, an error of its own)."""

    exit_code = 6
