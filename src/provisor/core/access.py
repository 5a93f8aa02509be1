"""Who may do what: the roles a user holds in a tenant, and what each allows.

A role is held per tenant; a user may hold one in each of several tenants. The
owner of the local data directory (the CLI without a server) has no role: the file
permissions are its boundary, and it may do everything.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    inventory_read = "inventory.read"  # hosts, groups
    inventory_write = "inventory.write"
    jobs_read = "jobs.read"
    jobs_run = "jobs.run"  # run, copy, kill on hosts
    catalog_read = "catalog.read"  # blueprints
    catalog_write = "catalog.write"
    deployments_request = "deployments.request"  # ask for one (and see, remove one's own)
    deployments_read = "deployments.read"  # every deployment of the tenant
    deployments_manage = "deployments.manage"  # remove any of the tenant's
    deployments_decide = "deployments.decide"  # approve or reject
    providers_read = "providers.read"
    providers_write = "providers.write"
    events_read = "events.read"
    alerts_read = "alerts.read"  # alerts, rules, notifiers (never their secrets)
    alerts_ack = "alerts.ack"  # acknowledge an alert: no more reminders
    alerts_manage = "alerts.manage"  # notifiers and rules
    backups_read = "backups.read"  # backups, their objects and the stores
    backups_manage = "backups.manage"  # take, verify, restore, delete; configure stores
    users_manage = "users.manage"  # members of the tenant and their tokens
    config_check = "config.check"  # plan and check change sets on hosts (reads them)
    config_apply = "config.apply"  # apply, roll back, set passwords
    passwords_read = "passwords.read"  # the passwords set-password stored, in clear
    patches_read = "patches.read"  # the patch catalog
    patches_analyze = "patches.analyze"  # refresh hosts' package lists, fill the catalog
    patches_apply = "patches.apply"  # upgrade packages, reboot hosts


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    requester = "requester"
    approver = "approver"
    auditor = "auditor"


_READ = {
    Action.inventory_read,
    Action.jobs_read,
    Action.catalog_read,
    Action.deployments_read,
    Action.providers_read,
    Action.events_read,
    Action.alerts_read,
    Action.backups_read,
    Action.patches_read,
}

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.admin: frozenset(Action),
    Role.operator: frozenset(
        _READ
        | {
            Action.inventory_write,
            Action.jobs_run,
            Action.catalog_write,
            Action.deployments_request,
            Action.deployments_manage,
            Action.alerts_ack,
            Action.backups_manage,
            Action.config_check,
            Action.config_apply,
            Action.patches_analyze,
            Action.patches_apply,
        }
    ),
    Role.requester: frozenset({Action.catalog_read, Action.deployments_request}),
    Role.approver: frozenset(
        {Action.catalog_read, Action.deployments_read, Action.deployments_decide}
    ),
    Role.auditor: frozenset(_READ | {Action.config_check}),  # compliance: drift reports
}


def allows(role: Role | None, action: Action) -> bool:
    """Whether `role` may do `action`; no role is the local data directory's owner."""
    return role is None or action in PERMISSIONS[role]


__all__ = ["PERMISSIONS", "Action", "Role", "allows"]
