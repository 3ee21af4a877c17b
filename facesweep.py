"""`import facesweep`: the Python API (jobs/api.py has it and its documentation)."""

from jobs.api import SCHEMA, FaceDetector, ImageResult, JobProgress, job_config, run

__all__ = ["SCHEMA", "FaceDetector", "ImageResult", "JobProgress", "job_config", "run"]
