"""The REST API: thin routes over the service layer."""

from provisor.api.app import create_app

__all__ = ["create_app"]
