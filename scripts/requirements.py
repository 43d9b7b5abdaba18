"""Print the pyproject.toml requirements that the running interpreter lacks.

Usage: python scripts/requirements.py EXTRAS   (EXTRAS: comma list, e.g. "test,bench")

Reads [build-system].requires (the package is installed with --no-build-isolation, so
its build requirements must be present), [project].dependencies and the named
[project.optional-dependencies]. A requirement is satisfied when an installed
distribution of that name has a version its specifier admits. Uses the `packaging`
copy vendored in pip, so it runs in a bare virtualenv without network.
"""
from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from pip._vendor.packaging.requirements import Requirement


def unsatisfied(extras: list[str]) -> list[str]:
    root = Path(__file__).resolve().parent.parent
    data = tomllib.loads((root / "pyproject.toml").read_text())
    project = data.get("project", {})
    reqs = list(data.get("build-system", {}).get("requires", []))
    reqs += project.get("dependencies", [])
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    missing = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not req.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


if __name__ == "__main__":
    chosen = [e for e in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if e]
    for r in unsatisfied(chosen):
        print(r)
