"""The use cases: the only entry points for the CLI, the API and the portal."""

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
