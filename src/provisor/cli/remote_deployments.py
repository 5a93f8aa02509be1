"""`provisor up|status|approve|reject|down|stop|start|params|deployments list|show --server URL`.

The same commands, through a provisor server's REST API with the caller's token. A
blueprint file given to `up` is sent as text and added to the server's catalog (a
version the server already holds must have the same text); nothing names a file there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisor.cli._context import current_tenant
from provisor.cli.deployments import (
    WAIT_EXIT,
    WaitEnd,
    catalog_reference,
    finish,
    follow,
    queued_line,
    removed_line,
    show,
    wait_end_of,
)
from provisor.cli.output import Format, console, emit_json, read_input_file
from provisor.cli.remote import ServerClient, server_token
from provisor.core.errors import InvalidInput, ProvisorError
from provisor.services.blueprints import validate_blueprint
from provisor.services.deployments import DeploymentDetail, DeploymentView, ParametersView


def client(server: str) -> ServerClient:
    return ServerClient(server, server_token(server), current_tenant())


def _catalog_reference(api: ServerClient, blueprint: str) -> tuple[str, str | None]:
    """(name, version) of the blueprint on the server: a file is added to its catalog."""
    path = Path(blueprint)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        return catalog_reference(blueprint)
    try:
        text = read_input_file(path, field="blueprint").decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text", field="blueprint") from None
    parsed = validate_blueprint(text, str(path))  # refused here, before anything is sent
    try:
        api.call("POST", "/blueprints", {"text": text, "source": path.name})
    except ProvisorError as exc:
        if exc.status != 409:
            raise
        held = api.call("GET", f"/blueprints/{parsed.name}", query={"version": parsed.version})
        if held["text"] != text:
            raise InvalidInput(
                f"the server holds {parsed.name} {parsed.version} with other content: "
                "give the blueprint a new version",
                field="blueprint",
            ) from None
    return parsed.name, parsed.version


def _follow(api: ServerClient, server: str, name: str, timeout: float) -> WaitEnd:
    """Print progress until the deployment ends (the server's worker does the work)."""
    return follow(
        name,
        lambda: DeploymentView.model_validate(api.call("GET", f"/deployments/{name}")),
        timeout=timeout,
        again=f"provisor status {name} --wait --server {server}",
    )


def up(
    server: str,
    blueprint: str,
    parameters: dict[str, str],
    *,
    name: str | None,
    completion: str | None,
    provider: str | None,
    lease: tuple[str | None, str | None, str | None],
    wait: bool,
    timeout: float,
    output: Format,
) -> None:
    """`up --server`; `lease` is (--lease, --at, --lease-end)."""
    api = client(server)
    reference, version = _catalog_reference(api, blueprint)
    body: dict[str, Any] = {
        "blueprint": reference,
        "version": version,
        "name": name,
        "parameters": parameters,
        "completion": completion,
        "provider": provider,
        "lease": lease[0],
        "at": lease[1],
        "lease_end": lease[2],
    }
    view = DeploymentView.model_validate(api.call("POST", "/deployments", body))
    if not wait:
        if output is Format.json:
            emit_json(view)
        else:
            console.print(
                f"deployment [bold]{view.name}[/] {queued_line(view)} on {server}; follow it with "
                f"`provisor status {view.name} --wait --server {server}`"
            )
        return
    finish(_follow(api, server, view.name, timeout), output)


def status(server: str, name: str, *, wait: bool, timeout: float, output: Format) -> None:
    api = client(server)
    view = DeploymentView.model_validate(api.call("GET", f"/deployments/{name}"))
    if wait and view.state not in WAIT_EXIT:
        finish(_follow(api, server, name, timeout), output)
    if wait:
        finish(wait_end_of(view), output)
    if output is Format.json:
        emit_json(view)
    else:
        show(view)


def decide(server: str, name: str, *, approved: bool, reason: str | None) -> None:
    api = client(server)
    if approved:
        api.call("POST", f"/deployments/{name}/approve")
    else:
        api.call("POST", f"/deployments/{name}/reject", {"reason": reason})
    console.print(f"{'approved' if approved else 'rejected'} [bold]{name}[/] on {server}")


def detail(server: str, name: str) -> DeploymentDetail:
    return DeploymentDetail.model_validate(
        client(server).call("GET", f"/deployments/{name}/detail")
    )


def get(server: str, name: str) -> DeploymentView:
    return DeploymentView.model_validate(client(server).call("GET", f"/deployments/{name}"))


def down(server: str, name: str) -> None:
    view = DeploymentView.model_validate(client(server).call("DELETE", f"/deployments/{name}"))
    console.print(removed_line(view))


def parameters(server: str, name: str) -> ParametersView:
    return ParametersView.model_validate(
        client(server).call("GET", f"/deployments/{name}/parameters")
    )


def listing(server: str) -> list[DeploymentView]:
    return [DeploymentView.model_validate(d) for d in client(server).call("GET", "/deployments")]


def lifecycle(server: str, name: str, action: str) -> DeploymentView:
    """`stop` or `start` through the server (its worker does it)."""
    return DeploymentView.model_validate(
        client(server).call("POST", f"/deployments/{name}/{action}")
    )


def extend_lease(server: str, name: str, *, by: str | None, until: str | None) -> DeploymentView:
    return DeploymentView.model_validate(
        client(server).call("POST", f"/deployments/{name}/lease", {"by": by, "until": until})
    )
