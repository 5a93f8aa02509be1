"""The lock files hold what pyproject.toml asks for, so `make test` installs it all."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def entries(lock: str) -> list[tuple[Requirement, list[str]]]:
    """Every `name==version ; marker` of a lock file, with its `--hash=` options."""
    found: list[tuple[Requirement, list[str]]] = []
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        option = line.strip().removesuffix("\\").strip()
        if not option or option.startswith("#"):
            continue
        if not line.startswith(" "):
            found.append((Requirement(option), []))
        elif option.startswith("--hash="):
            found[-1][1].append(option)
    return found


def pins(lock: str) -> dict[str, list[Requirement]]:
    """The pins of a lock file by name (a name may be pinned once per marker)."""
    found: dict[str, list[Requirement]] = {}
    for requirement, _ in entries(lock):
        assert str(requirement.specifier).startswith("=="), requirement
        found.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return found


def pinned_here(lock: dict[str, list[Requirement]], name: str) -> str | None:
    """The version pinned for this interpreter, if any."""
    for requirement in lock.get(canonicalize_name(name), []):
        if requirement.marker is None or requirement.marker.evaluate():
            return str(requirement.specifier).removeprefix("==")
    return None


def declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


@pytest.mark.parametrize("line", declared())
def test_the_test_lock_satisfies_pyproject(line: str) -> None:
    requirement = Requirement(line)
    version = pinned_here(pins("test.txt"), requirement.name)
    assert version is not None, f"{requirement.name} is not in requirements/test.txt: make lock"
    assert requirement.specifier.contains(version, prereleases=True), (
        f"requirements/test.txt pins {requirement.name}=={version}, pyproject.toml asks "
        f"{requirement.specifier}: make lock"
    )


def test_the_runtime_lock_has_the_test_lock_versions() -> None:
    test = pins("test.txt")
    for name, requirements in pins("runtime.txt").items():
        assert [str(r) for r in requirements] == [str(r) for r in test[name]], name


def test_pip_is_installed_first_at_the_test_lock_version() -> None:
    assert [str(r) for r in pins("pip.txt")["pip"]] == [str(r) for r in pins("test.txt")["pip"]]


@pytest.mark.parametrize("lock", ["test.txt", "runtime.txt", "bench.txt", "pip.txt"])
def test_every_pin_has_hashes(lock: str) -> None:
    found = entries(lock)
    assert found
    assert [str(r) for r, hashes in found if not hashes] == []
