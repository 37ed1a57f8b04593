"""How the suite is spread over pytest-xdist workers (``-n``, set in pyproject.toml).

Each test is a unit of its own, handed to whichever worker is free, except in a module that
sets something up once for all its tests (a fixture with ``scope="module"``, ``"class"`` or
``"package"``: a worker process, a Sentinel group, a venv): such a module is one unit, run by
one worker, so that its setup is made once. Tests come in collection order, which the
conftest puts slow-first, so that no long test starts last and runs alone.

(xdist's own ``--dist loadgroup`` would say the same with marks, but it carries the group in
the test id, which pytest 9.2 no longer lets a plugin change: pytest-xdist issue 1386.)
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

WIDER_SCOPE = re.compile(r"""@pytest\.fixture\(\s*scope\s*=\s*["'](?:module|class|package)["']""")


@cache
def sets_up_once(path: Path) -> bool:
    """The test module at ``path`` declares a fixture set up once for the module or wider."""
    return path.suffix == ".py" and bool(WIDER_SCOPE.search(path.read_text()))


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class ModuleWhereShared(LoadScopeScheduling):
    """xdist's scope scheduling with a test's own id as its scope, or its module's when the
    module sets up once; scopes in collection order."""

    def __init__(self, config: pytest.Config, log: object = None) -> None:
        super().__init__(config, log)  # type: ignore[arg-type]
        self.root = config.rootpath

    def _split_scope(self, nodeid: str) -> str:
        module = module_of(nodeid)
        return module if sets_up_once(self.root / module) else nodeid
