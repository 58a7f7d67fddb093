"""The lock files in requirements/ agree with pyproject.toml (regenerate with `make lock`).

A dependency added, removed or re-floored in pyproject.toml without re-locking fails here,
naming the package, so the lock that install.sh, the Dockerfile and CI install from never
drifts from what the project declares.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
PROJECT = "ai-micro-service (pyproject.toml)"
OCR_UNLOCKED = {"torch", "torchvision"}  # pinned by version in requirements/torch.txt
HINT = "run `make lock` and commit requirements/"


@dataclass
class Pin:
    version: str
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def parse_lock(path: Path) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in path.read_text().splitlines():
        entry = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line)
        if entry:
            current = pins.setdefault(canonicalize_name(entry[1]), Pin(entry[2]))
        elif current and "--hash=sha256:" in line:
            current.hashes += 1
        elif current and line.strip().startswith("#"):
            current.via.append(line.strip("# ").removeprefix("via ").strip())
    return pins


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


LOCKS = {"runtime.txt": (), "dev.txt": ("dev",), "ocr.txt": ("ocr",)}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_every_declared_dependency_within_its_range(lock: str) -> None:
    pins = parse_lock(REQ / lock)
    torch = parse_lock(REQ / "torch.txt")
    problems = []
    for req in declared(*LOCKS[lock]):
        name = canonicalize_name(req.name)
        pin = (torch if name in OCR_UNLOCKED else pins).get(name)
        if pin is None:
            problems.append(f"{req} is declared but not locked")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req} is declared but {name}=={pin.version} is locked")
    assert not problems, f"{lock}: {'; '.join(problems)} ({HINT})"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_has_no_direct_dependency_the_project_no_longer_declares(lock: str) -> None:
    pins = parse_lock(REQ / lock)
    wanted = {canonicalize_name(r.name) for r in declared(*LOCKS[lock])}
    direct = {name for name, pin in pins.items() if PROJECT in pin.via}
    assert direct - wanted == set(), f"{lock}: no longer declared: {direct - wanted} ({HINT})"
    assert wanted - OCR_UNLOCKED <= direct, f"{lock}: not locked as direct: {wanted - direct}"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_file_is_pinned_by_hash(lock: str) -> None:
    unhashed = [name for name, pin in parse_lock(REQ / lock).items() if pin.hashes == 0]
    assert not unhashed, f"{lock}: pinned without a hash: {unhashed} ({HINT})"


def test_locks_agree_on_shared_packages() -> None:
    runtime = parse_lock(REQ / "runtime.txt")
    for lock in ("dev.txt", "ocr.txt"):
        other = parse_lock(REQ / lock)
        differ = {n: (p.version, other[n].version) for n, p in runtime.items()
                  if n in other and other[n].version != p.version}
        assert not differ, f"{lock} pins other versions than runtime.txt: {differ} ({HINT})"
        missing = set(runtime) - set(other)
        assert not missing, f"{lock} lacks runtime packages {missing} ({HINT})"


def test_ocr_lock_leaves_the_torch_build_to_the_installer() -> None:
    pins = parse_lock(REQ / "ocr.txt")
    cuda = [n for n in pins if n in OCR_UNLOCKED or n.startswith(("nvidia-", "cuda-", "triton"))]
    assert not cuda, f"ocr.txt must not pin a torch build: {cuda}"
