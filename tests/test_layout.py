"""The package's layers, checked from its import graph (grimp reads every import statement,
those inside functions included).

    greensq.http                         Falcon apps, launchers, Gunicorn workers
    greensq.services.nsqd | nsqlookupd | nsqadmin | tools
                                         each daemon's core; the utilities
    greensq.actors | greensq.client      the actors the cores run; the client the
                                         utilities are built on
    greensq.services.shared              what all of them share

A module imports only from its own layer's package and the layers below it; the packages
of one layer do not import each other; and no module imports itself back through others.
Deferred imports (services/shared/deferred.py) count as imports, and the README's
architecture section lists every one. ``python -m pytest tests/test_layout.py`` checks it.
"""

import re
from pathlib import Path

import grimp
import pytest
from grimp import Layer

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"actors": "greensq.actors", "services": "greensq.services", "http": "greensq.http",
           "client": "greensq.client"}
DEFERRED = re.compile(r'^\w+ = deferred_import\("([\w.]+)"', re.M)
README_DEFERRED = re.compile(r"`([\w.]+)`\s+in\s+`([\w/.]+\.py)`")

ROOTS = ("greensq.actors", "greensq.services", "greensq.http", "greensq.client")
LAYERS = (
    "greensq.http",
    Layer("greensq.services.nsqd", "greensq.services.nsqlookupd", "greensq.services.nsqadmin",
          "greensq.services.tools", independent=True),
    Layer("greensq.actors", "greensq.client", independent=True),
    "greensq.services.shared",
)


def deferred_imports():
    """``(path, module)`` of every ``name = deferred_import("module")`` in the package."""
    found = set()
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for module in DEFERRED.findall(path.read_text()):
                found.add((str(path.relative_to(REPO)), module))
    return found


def module_name(path):
    folder, _, rest = path.partition("/")
    name = f"{FOLDERS[folder]}.{rest.removesuffix('.py').replace('/', '.')}"
    return name.removesuffix(".__init__")


@pytest.fixture(scope="module")
def graph():
    graph = grimp.build_graph(*ROOTS)
    # http/ has no __init__.py (it must not shadow the standard library's http), so the
    # graph knows its modules but not the package: name it for the layer check.
    graph.add_module("greensq.http")
    for path, module in deferred_imports():
        if module.startswith("greensq."):
            graph.add_import(importer=module_name(path), imported=module)
    return graph


def describe(dependency):
    route = dependency.routes and min(dependency.routes, key=lambda r: len(r.middle))
    via = " -> ".join([*route.heads, *route.middle, *route.tails]) if route else ""
    return f"{dependency.importer} imports {dependency.imported}" + (f" ({via})" if via else "")


def test_every_import_goes_down_the_layers(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS)
    assert not illegal, "\n".join(sorted(describe(d) for d in illegal))


def test_every_module_is_in_a_layer(graph):
    packages = {name for layer in LAYERS
                for name in ([layer] if isinstance(layer, str) else layer.module_tails)}
    outside = sorted(module for module in graph.modules
                     if module.startswith("greensq.") and module != "greensq.services"
                     and not any(module == package or module.startswith(package + ".")
                                 for package in packages))
    assert not outside


def test_no_module_imports_itself_back(graph):
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycles.add(" -> ".join((module, *chain)))
    assert not cycles, "\n".join(sorted(cycles))


def test_the_readme_lists_every_deferred_import():
    section = (REPO / "README.md").read_text().split("### Deferred imports", 1)[1]
    listed = {(path, module) for module, path in README_DEFERRED.findall(section)}
    assert listed == deferred_imports()
