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
``python -m pytest tests/test_layout.py`` checks it.
"""

import grimp
import pytest
from grimp import Layer

ROOTS = ("greensq.actors", "greensq.services", "greensq.http", "greensq.client")
LAYERS = (
    "greensq.http",
    Layer("greensq.services.nsqd", "greensq.services.nsqlookupd", "greensq.services.nsqadmin",
          "greensq.services.tools", independent=True),
    Layer("greensq.actors", "greensq.client", independent=True),
    "greensq.services.shared",
)


@pytest.fixture(scope="module")
def graph():
    graph = grimp.build_graph(*ROOTS)
    # http/ has no __init__.py (it must not shadow the standard library's http), so the
    # graph knows its modules but not the package: name it for the layer check.
    graph.add_module("greensq.http")
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
