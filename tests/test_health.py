"""The health state machine (pure) and the blueprint's `checks` and `recovery` fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisor.core.blueprint import load_blueprint
from provisor.core.errors import ProvisorError
from provisor.core.health import (
    Health,
    HealthState,
    Thresholds,
    action_taken,
    gave_up,
    observe,
    recovery_exhausted,
    recovery_started,
)

H = HealthState
T = Thresholds(failures=3, successes=2)


def run(health: Health, results: str, thresholds: Thresholds = T) -> Health:
    for mark in results:
        health = observe(health, mark == "+", thresholds)
    return health


def test_failures_make_degraded_then_unhealthy_with_a_new_incident() -> None:
    assert run(Health(), "-").state is H.degraded
    assert run(Health(), "--").state is H.degraded
    unhealthy = run(Health(), "---")
    assert (unhealthy.state, unhealthy.incident) == (H.unhealthy, 1)
    assert run(unhealthy, "+---").incident == 1  # still the same incident
    assert run(Health(), "-+-+-+-+").state is H.degraded  # never 3 in a row, never 2 good


def test_successes_bring_it_back() -> None:
    assert run(Health(), "--++").state is H.healthy
    assert run(Health(), "--+-+").state is H.degraded
    unhealthy = run(Health(), "---")
    back = run(unhealthy, "++")
    assert (back.state, back.incident) == (H.healthy, 1)
    assert run(back, "---").incident == 2  # the next incident has the next number


def test_recovery_moves() -> None:
    unhealthy = run(Health(), "---")
    recovering = recovery_started(unhealthy)
    assert (recovering.state, recovering.failures) == (H.recovering, 0)
    still = run(recovering, "---")
    assert still.state is H.recovering and gave_up(still, T)
    assert action_taken(still).failures == 0
    assert run(recovering, "++").state is H.healthy
    failed = recovery_exhausted(still)
    assert failed.state is H.failed and failed.incident == 1
    assert run(failed, "-+").state is H.failed
    assert run(failed, "++").state is H.healthy  # mended by hand: the incident ends
    assert recovery_started(Health()) == Health()  # only an unhealthy machine recovers
    assert recovery_exhausted(Health()) == Health()


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError):
        Thresholds(failures=0)


thresholds = st.builds(Thresholds, st.integers(1, 6), st.integers(1, 6))
moves = st.lists(st.sampled_from(["+", "-", "start", "act", "exhaust"]), max_size=80)


def apply(health: Health, move: str, limits: Thresholds) -> Health:
    if move in "+-":
        return observe(health, move == "+", limits)
    return {"start": recovery_started, "act": action_taken, "exhaust": recovery_exhausted}[move](
        health
    )


@given(thresholds, moves)
def test_properties_of_any_history(limits: Thresholds, history: list[str]) -> None:
    health = Health()
    for move in history:
        before, health = health, apply(health, move, limits)
        # Incidents only ever grow, by one, and only when a machine turns unhealthy.
        assert health.incident in (before.incident, before.incident + 1)
        if health.incident != before.incident:
            assert health.state is H.unhealthy and not before.in_incident
        # Never both counters at once; healthy forgets failures.
        assert health.failures == 0 or health.successes == 0
        if health.state is H.healthy:
            assert health.failures == 0
        # Only the recovery's own moves enter recovering and failed.
        if health.state is H.recovering and before.state is not H.recovering:
            assert move == "start" and before.state is H.unhealthy
        if health.state is H.failed and before.state is not H.failed:
            assert move == "exhaust"
        # Enough good rounds in a row always end any state in healthy.
    for _ in range(limits.successes):
        health = observe(health, True, limits)
    assert health.state is H.healthy


@given(thresholds, st.lists(st.booleans(), max_size=60))
def test_checks_alone_never_recover_or_fail(limits: Thresholds, results: list[bool]) -> None:
    health, run_of_failures = Health(), 0
    for ok in results:
        before, health = health, observe(health, ok, limits)
        run_of_failures = 0 if ok else run_of_failures + 1
        assert health.state in (H.healthy, H.degraded, H.unhealthy)
        if health.state is H.unhealthy and before.state is not H.unhealthy:
            assert run_of_failures == limits.failures  # exactly then, not before
        if health.state is H.degraded:
            assert 0 < run_of_failures < limits.failures or health.successes > 0


BASE = """name: hc
version: '1'
nodes:
  web:
    image: debian-12
"""


def loaded(extra: str) -> object:
    return load_blueprint(BASE + extra, source="hc.yaml")


def test_checks_and_ladder_load_with_defaults() -> None:
    bp = loaded(
        "    checks: [provider, ssh, {kind: tcp, port: 22}]\n"
        "    recovery:\n      - {action: command, command: 'systemctl restart x', attempts: 2}\n"
        "      - {action: reboot}\n"
    )
    node = bp.nodes["web"]  # type: ignore[attr-defined]
    assert node.checks.interval == 30 and node.checks.failures == 3
    assert [p.kind for p in node.checks.probes] == ["provider", "ssh", "tcp"]
    assert [(s.action, s.attempts, s.backoff) for s in node.recovery] == [
        ("command", 2, 10.0),
        ("reboot", 1, 10.0),
    ]
    full = loaded(
        "    checks:\n      interval: 1m\n      timeout: 5\n      failures: 2\n      successes: 1\n"
        "      probes:\n"
        "        - {kind: http, port: 8080, path: /health, status: 204, body: '^ok'}\n"
        "        - {kind: command, command: 'pgrep -f app.py'}\n"
    )
    checks = full.nodes["web"].checks  # type: ignore[attr-defined]
    assert (checks.interval, checks.timeout, checks.successes) == (60.0, 5.0, 1)


HOSTILE = [
    ("    checks: []\n", "at least 1"),
    ("    checks: {probes: [ssh], interval: 0s}\n", "between 1s and 3600s"),
    ("    checks: {probes: [ssh], interval: 2d}\n", "invalid duration"),
    ("    checks: {probes: [ssh], interval: true}\n", "duration"),
    ("    checks: {probes: [ssh], interval: .nan}\n", "duration"),
    ("    checks: {probes: [ssh], interval: 5s, timeout: 10s}\n", "longer than the interval"),
    ("    checks: {probes: [ssh], failures: 0}\n", "greater than or equal to 1"),
    ("    checks: {probes: [ssh], successes: 1000}\n", "less than or equal to 100"),
    ("    checks: [ping]\n", "'provider', 'ssh', 'tcp', 'http' or 'command'"),
    ("    checks: [{kind: tcp}]\n", "needs a port"),
    ("    checks: [{kind: tcp, port: 70000}]\n", "less than or equal to 65535"),
    ("    checks: [{kind: ssh, port: 22}]\n", "does not apply to a ssh check"),
    ("    checks: [{kind: http, port: 80, path: health}]\n", "starts with /"),
    ("    checks: [{kind: http, port: 80, path: '/a b'}]\n", "no spaces"),
    ("    checks: [{kind: http, port: 80, body: '(a'}]\n", "RE2"),
    ("    checks: [{kind: http, port: 80, body: '(a)\\1'}]\n", "backreferences"),
    ("    checks: [{kind: http, port: 80, status: 99}]\n", "greater than or equal to 100"),
    ("    checks: [{kind: command}]\n", "needs a command"),
    ("    checks: [{kind: command, command: '   '}]\n", "cannot be empty"),
    ("    checks: [{kind: command, command: " + "x" * 5000 + "}]\n", "at most 4096"),
    ("    checks: [ssh]\n    recovery: [{action: reboot, command: ls}]\n", "only to a command"),
    ("    checks: [ssh]\n    recovery: [{action: command}]\n", "needs a command"),
    ("    checks: [ssh]\n    recovery: [{action: explode}]\n", "'restore-from-backup'"),
    ("    checks: [ssh]\n    recovery: [{action: reboot, attempts: 11}]\n", "less than or equal"),
    ("    checks: [ssh]\n    recovery: [{action: reboot, backoff: -1}]\n", "between 0s"),
    ("    checks: [ssh]\n    recovery: [" + ", ".join(["reboot"] * 11) + "]\n", "at most 10"),
    ("    recovery: [{action: reboot}]\n", "recovery needs checks"),
    ("    checks: [ssh]\n    recovery: {action: reboot}\n", "tuple"),
    ("    checks: [" + ", ".join(["ssh"] * 21) + "]\n", "at most 20"),
    ("    checks: {probes: [ssh], every: 5s}\n", "every"),
]


@pytest.mark.parametrize(("extra", "says"), HOSTILE)
def test_hostile_checks_and_ladders_are_refused_where_they_are(extra: str, says: str) -> None:
    with pytest.raises(ProvisorError) as caught:
        loaded(extra)
    text = str(caught.value)
    assert says in text, text
    assert "hc.yaml:6:" in text or "hc.yaml:7:" in text or "hc.yaml:5:" in text, text


def test_history_is_bounded_and_overrides_apply(tmp_path: object) -> None:
    from pathlib import Path

    from sqlalchemy import func, select

    from db_rows import add_deployment
    from provisor.core.health import Health as H0
    from provisor.orchestrator import health_records as records
    from provisor.store import Store
    from provisor.store.health import HISTORY_LIMIT, HealthTransition
    from provisor.store.models import Event
    from provisor.store.orchestration import Deployment, Machine

    assert isinstance(tmp_path, Path)
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        deployment_id = add_deployment(store, "hb", machines=[("web", 1)])
        with store.session() as session:
            deployment = session.get(Deployment, deployment_id)
            machine = session.scalars(select(Machine)).one()
            session.expunge_all()
        assert deployment is not None
        states = [H0(H.healthy), H0(H.degraded, 1)]
        for number in range(HISTORY_LIMIT + 10):
            before, after = states[number % 2], states[(number + 1) % 2]
            records.save(store, deployment, machine, before, after, results=[], detail="x")
        with store.session() as session:
            kept = session.scalar(select(func.count()).select_from(HealthTransition))
            degraded = session.scalar(
                select(func.count()).select_from(Event).where(Event.kind == "health.degraded")
            )
        assert kept == HISTORY_LIMIT
        assert degraded == (HISTORY_LIMIT + 10) // 2  # every entry into degraded, an event
        from provisor.services.context import Context
        from provisor.services.health import counts

        seen = counts(Context(store=store, actor="owner", tenant="default"))
        assert seen.machines == {
            "hb": {"healthy": 1, "degraded": 0, "unhealthy": 0, "recovering": 0, "failed": 0}
        }
        assert seen.recoveries == {"started": 0, "succeeded": 0, "failed": 0}
        assert seen.infrastructure_down == []
        other = counts(Context(store=store, actor="owner", tenant="other"))
        assert other.machines == {}  # another tenant's machines are not counted
    finally:
        store.close()
    text = BASE + "    checks: {interval: 30s, probes: [ssh]}\n    recovery: [reboot]\n"
    nodes = records.node_health(text, "hb", {"*": {"interval": "5s"}, "web": {"failures": 1}})
    assert (nodes["web"].checks.interval, nodes["web"].checks.failures) == (5.0, 1)
    assert nodes["web"].recovery
    assert not records.node_health(text, "hb", {"web": {"recovery": False}})["web"].recovery
    assert records.node_health(text, "hb", {"web": {"checks": False}}) == {}


CLI_HOSTILE = [
    (["--set", "interval"], "use KEY=VALUE"),
    (["--set", "=5s"], "use KEY=VALUE"),
    (["--set", "interval=0s"], "between 1s and 3600s"),
    (["--set", "interval=5s", "--set", "timeout=9s"], "longer than the interval"),
    (["--set", "failures=-1"], "a whole number"),
    (["--set", "failures=9999999"], "a whole number"),
    (["--set", "recovery=maybe"], "use on or off"),
    (["--set", "probes=[]"], "not a setting"),
    (["--node", "db", "--set", "failures=2"], "no node 'db' with checks"),
    (["--node", "../x", "--set", "failures=2"], "no node"),
]


def test_hostile_health_settings_from_the_cli(tmp_path: object) -> None:
    """`provisor health NAME --set ...` refuses what is wrong, saying what and where, and
    changes nothing; another tenant's deployment is not found."""
    import json
    from pathlib import Path

    from sqlalchemy import update

    from db_rows import add_deployment
    from provisor.store import Store
    from provisor.store.orchestration import Deployment
    from provisor_cli import Provisor

    assert isinstance(tmp_path, Path)
    cli = Provisor(tmp_path / "home")
    cli("deployments", "list")  # the data directory and its database
    store = Store(f"sqlite:///{cli.home / 'provisor.db'}")
    try:
        text = BASE + "    checks: {interval: 10s, probes: [ssh]}\n  db:\n    image: debian-12\n"
        for name, tenant in (("mine", "default"), ("theirs", "other")):
            deployment_id = add_deployment(
                store, name, tenant=tenant, machines=[("web", 1), ("db", 1)]
            )
            with store.session() as session:
                session.execute(
                    update(Deployment)
                    .where(Deployment.id == deployment_id)
                    .values(blueprint_text=text)
                )
    finally:
        store.close()
    for args, says in CLI_HOSTILE:
        refused = cli("health", "mine", *args, check=False)
        assert refused.returncode == 2 and says in refused.stderr, (args, refused.stderr)
    view = json.loads(cli("health", "mine", "--output", "json").stdout)
    assert view["overrides"] == {} and [m["machine"] for m in view["machines"]] == ["web.1"]
    done = cli("health", "mine", "--node", "web", "--set", "failures=5", "--output", "json")
    assert json.loads(done.stdout)["overrides"] == {"web": {"failures": 5}}
    missing = cli("health", "theirs", check=False)
    assert missing.returncode == 2 and "no deployment named 'theirs'" in missing.stderr


def test_a_deployment_whose_blueprint_is_unreadable_stops_no_others_checks(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A ready deployment whose stored blueprint does not load (a damaged row) has no
    checks, said once in the log; the other deployments are watched as before."""
    from pathlib import Path

    from sqlalchemy import update

    from db_rows import add_deployment
    from provisor.orchestrator import health_records as records
    from provisor.store import Store
    from provisor.store.orchestration import Deployment

    assert isinstance(tmp_path, Path)
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        checked = BASE + "    checks: {interval: 30s, probes: [ssh]}\n"
        for name, text in (("damaged", "name: damaged\n"), ("hc", checked)):
            add_deployment(store, name)
            with store.session() as session:
                session.execute(
                    update(Deployment).where(Deployment.name == name).values(blueprint_text=text)
                )
        known: dict[str, records.Watched] = {}
        for _ in range(3):  # the monitor's refreshes
            watched = records.watched(store, known)
            assert [w.name for w in watched] == ["hc"] and set(watched[0].nodes) == {"web"}
        said = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
        assert len(said) == 1 and "missing required field 'version'" in said[0], said
    finally:
        store.close()
