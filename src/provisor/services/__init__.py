"""The use cases: the only entry points for the CLI, the API and the portal.

Names load on first use (PEP 562): a command that needs one use case does not
pay for importing every other one (and the database layer) at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisor.core.lazy import lazy_exports

if TYPE_CHECKING:
    from provisor.services.context import Context, open_context
    from provisor.services.events import follow_events, list_events
    from provisor.services.groups import (
        add_group,
        change_members,
        get_group,
        group_members,
        list_groups,
        remove_group,
        set_parent,
    )
    from provisor.services.hosts import add_host, get_host, list_hosts, remove_host, update_host
    from provisor.services.importing import import_hosts
    from provisor.services.schemas import (
        GroupSpec,
        GroupView,
        HostChanges,
        HostSpec,
        HostView,
        ImportReport,
        validate,
    )

_LAZY = {
    "Context": "provisor.services.context",
    "GroupSpec": "provisor.services.schemas",
    "GroupView": "provisor.services.schemas",
    "HostChanges": "provisor.services.schemas",
    "HostSpec": "provisor.services.schemas",
    "HostView": "provisor.services.schemas",
    "ImportReport": "provisor.services.schemas",
    "add_group": "provisor.services.groups",
    "add_host": "provisor.services.hosts",
    "change_members": "provisor.services.groups",
    "follow_events": "provisor.services.events",
    "get_group": "provisor.services.groups",
    "get_host": "provisor.services.hosts",
    "group_members": "provisor.services.groups",
    "import_hosts": "provisor.services.importing",
    "list_events": "provisor.services.events",
    "list_groups": "provisor.services.groups",
    "list_hosts": "provisor.services.hosts",
    "open_context": "provisor.services.context",
    "remove_group": "provisor.services.groups",
    "remove_host": "provisor.services.hosts",
    "set_parent": "provisor.services.groups",
    "update_host": "provisor.services.hosts",
    "validate": "provisor.services.schemas",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "Context",
    "GroupSpec",
    "GroupView",
    "HostChanges",
    "HostSpec",
    "HostView",
    "ImportReport",
    "add_group",
    "add_host",
    "change_members",
    "follow_events",
    "get_group",
    "get_host",
    "group_members",
    "import_hosts",
    "list_events",
    "list_groups",
    "list_hosts",
    "open_context",
    "remove_group",
    "remove_host",
    "set_parent",
    "update_host",
    "validate",
]
