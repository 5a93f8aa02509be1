"""The use cases: the only entry points for the CLI, the API and the portal.

One way in: import the module of the use case, e.g. `from provisor.services import
hosts` then `hosts.add_host(ctx, spec)`. Each module loads on first use, so a command
pays only for what it needs; nothing is re-exported here.
"""
