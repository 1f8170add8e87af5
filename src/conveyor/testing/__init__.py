"""Reusable contract suites, one per backend seam.

Each suite is a class of pytest tests that asks for one fixture, the backend
under test; a test module runs it against a backend by subclassing it and
providing that fixture, in the manner of fsspec's ``fsspec.tests.abstract``.
A third-party backend proves it honours the seam by running the same suite.
"""
