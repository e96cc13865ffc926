"""The package's layering: no import cycle between its subpackages, plain-data modules that import
without TensorFlow, and search modules of a readable size."""
import ast
import os
import subprocess
import sys

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mobiledets_tf")

# ArchSpecs, search spaces and the cost model (a ridge fit) are data and numpy only.
TENSORFLOW_FREE = ("mobiledets_tf.arch", "mobiledets_tf.layers.block_rules", "mobiledets_tf.search.space",
                   "mobiledets_tf.search.cost_features", "mobiledets_tf.search.cost_model")


def _unit(module: str) -> str:
    """The subpackage (or top-level module) of a dotted `mobiledets_tf.x.y` name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _import_graph():
    """{unit: {unit it imports}}, counting every import statement, inside functions too."""
    graph = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = "mobiledets_tf." + os.path.relpath(path, PACKAGE_DIR)[:-3].replace(os.sep, ".")
            edges = graph.setdefault(_unit(module), set())
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for imported in names:
                    if imported.startswith("mobiledets_tf.") and _unit(imported) != _unit(module):
                        edges.add(_unit(imported))
    return graph


def _find_cycle(graph):
    """One cycle as a list of units, or None."""
    state, stack = {}, []

    def visit(unit):
        state[unit] = "open"
        stack.append(unit)
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[unit] = "done"
        stack.pop()
        return None

    for unit in sorted(graph):
        if unit not in state:
            found = visit(unit)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_subpackages():
    graph = _import_graph()
    assert {"training", "evaluation", "models", "quantization", "search"} <= set(graph)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", TENSORFLOW_FREE)
def test_plain_data_modules_import_without_tensorflow(module):
    code = (f"import sys, {module}\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'))\n"
            "print(' '.join(loaded))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} loads {result.stdout.split()[:3]}"


def test_search_modules_stay_under_400_lines():
    folder = os.path.join(PACKAGE_DIR, "search")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                assert sum(1 for _ in f) <= 400, f"search/{name} is over 400 lines: split it by job"
