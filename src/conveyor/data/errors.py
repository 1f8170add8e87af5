"""What the data layer raises, as branches of Conveyor's one error hierarchy.

::

    NotFoundError
    └── UndeclaredDatasetError         code "dataset_undeclared"   (a typo, or --new missing)
    ConfigError
    └── ExpectationColumnError         code "expectation_column_unknown"
    ConflictError
    └── BatchAlreadyIngestedError      code "batch_already_ingested" (--force to ingest again)

Each is raised before anything is stored: no version, no quarantine batch,
no watermark moved.
"""

from __future__ import annotations

from conveyor.errors import ConfigError, ConflictError, NotFoundError

__all__ = ["BatchAlreadyIngestedError", "ExpectationColumnError", "UndeclaredDatasetError"]


class UndeclaredDatasetError(NotFoundError):
    """The data set is not declared in ``conveyor.yaml`` and was never ingested; the
    message names the closest declared one. ``--new`` (``new=True``) makes an ad-hoc one."""

    code = "dataset_undeclared"


class ExpectationColumnError(ConfigError):
    """An expectation names a column the data does not have (and never had): a mistake
    in the spec, not bad data. The message lists the columns and the closest one."""

    code = "expectation_column_unknown"


class BatchAlreadyIngestedError(ConflictError):
    """A batch with the same content hash is already in a version of this data set
    (named in ``version``); ``--force`` (``force=True``) ingests it again."""

    code = "batch_already_ingested"
