"""Imported by Python at start-up when this directory is on PYTHONPATH (crash tests only)."""

from provisor.testing.crash import install

install()
