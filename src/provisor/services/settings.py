"""provisor's settings (the environment, then provisor.toml, then the defaults), for the
faces that need them without the store: `services.context` brings SQLAlchemy along, which
`provisor run --server` (the data directory, for the token `provisor login` kept) does
not need."""

from provisor.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
