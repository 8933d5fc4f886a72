"""One hierarchy for every error the system expects, each with a stable code.

The core raises these and knows nothing of HTTP; ``serving/api/errors.py`` maps each class to a
status in one table, and the command line's one error boundary (``cli.main``) turns any of them
into a message and an exit code. Anything else that escapes is a bug: a 500 or a traceback.
"""

from __future__ import annotations


class DetectorError(Exception):
    """An expected failure: ``code`` is stable (clients and scripts may branch on it),
    ``message`` is for people. A class sets its code; an instance may name a finer one."""

    code: str = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InputError(DetectorError):
    """What the caller sent cannot be used (an image, a request, a file name)."""

    code = "invalid_input"


class ModelNotFound(DetectorError):
    code = "model_not_found"


class ModelNotReady(DetectorError):
    code = "not_ready"


class ShuttingDown(DetectorError):
    code = "shutting_down"


class Overloaded(DetectorError):
    """The inference queue is full: refused at once rather than left to wait."""

    code = "overloaded"


class ExplanationUnavailable(DetectorError):
    code = "explanation_unavailable"


class BundleInvalid(DetectorError):
    """A model bundle that cannot be used: missing, altered, foreign or unbuildable."""

    code = "bundle_invalid"


class RegistryUnavailable(DetectorError):
    """The model registry cannot be reached or does not hold what was asked."""

    code = "registry_unavailable"


class ReloadFailed(DetectorError):
    """A model could not be swapped in; the one serving before keeps serving."""

    code = "reload_failed"


class DatasetInvalid(DetectorError):
    """A dataset path that cannot be read as labelled images."""

    code = "dataset_invalid"


class StoreUnavailable(DetectorError):
    code = "store_unavailable"


class TrainingFailed(DetectorError):
    """Training could not produce a bundle (weights, export parity, configuration)."""

    code = "training_failed"


class JobNotFound(DetectorError):
    code = "job_not_found"


class JobConflict(DetectorError):
    """The job cannot do that in its state, or an idempotency key was reused for another body."""

    code = "job_conflict"


class JobLimitReached(DetectorError):
    """An API key has as many jobs or images in flight as it may."""

    code = "job_limit"


class JobsUnavailable(DetectorError):
    code = "jobs_unavailable"


class SettingsInvalid(DetectorError):
    """Settings the service cannot safely start with."""

    code = "settings_invalid"


class RegionUnavailable(DetectorError):
    """The region that holds a record cannot be reached: nothing was done, try again later."""

    code = "region_unavailable"


class NotInRegion(DetectorError):
    """A record made in a region this one does not know (or a request passed on twice)."""

    code = "not_in_region"
