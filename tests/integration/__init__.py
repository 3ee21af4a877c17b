"""Tests on real components in one process: a local Ray, SeaweedFS, real models."""
