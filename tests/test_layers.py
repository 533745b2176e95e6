"""The package's shape: layers import downwards, and no varemi module imports another lazily.

The layer order itself is checked by import-linter (``.importlinter``, run by ``.ci/run``);
these tests hold what import-linter cannot see: imports written inside functions, which
is how an import circle hides.
"""

import ast
from pathlib import Path

import varemi

PACKAGE = Path(varemi.__file__).parent

LAYERS = ("_base", "core", "music", "labelling", "corpus", "dataset", "pipeline", "training")
"""Bottom to top; ``cli`` and ``__main__`` sit above them all."""

# Optional heavy dependencies: imported where used, so that a build never pays for them.
LAZY_ALLOWED = {"torch", "transformers", "accelerate", "ray", "matplotlib", "huggingface_hub"}
LAZY_ALLOWED |= {"starlette", "uvicorn"}  # varemi[serve]


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _function_level_imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    class Visitor(ast.NodeVisitor):
        depth = 0

        def visit_FunctionDef(self, node):
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Import(self, node):
            if self.depth:
                found.extend((node.lineno, a.name) for a in node.names)

        def visit_ImportFrom(self, node):
            if self.depth:
                found.append((node.lineno, "." * node.level + (node.module or "")))

    Visitor().visit(tree)
    return found


def test_every_layer_is_a_package():
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_no_varemi_module_imports_another_inside_a_function():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line} imports {name}"
        for path in _modules()
        for line, name in _function_level_imports(path)
        if name.startswith(("varemi", "."))
    ]
    assert offenders == []


def test_optional_heavy_dependencies_are_the_only_other_lazy_imports_of_note():
    # miditok goes through varemi.music.tokenizer.import_miditok (it hides torch), and
    # pyarrow/datasets/tqdm/symusic are imported where used to keep worker start-up light;
    # anything else imported inside a function is listed here so it is a decision.
    light = {"miditok", "pyarrow", "datasets", "tqdm", "symusic", "pandas"}
    stdlib_ok = {"csv", "json", "os", "sys", "threading", "importlib", "hashlib", "contextlib"}
    stdlib_ok |= {"warnings", "shutil"}
    unexpected = [
        f"{path.relative_to(PACKAGE)}:{line} imports {name}"
        for path in _modules()
        for line, name in _function_level_imports(path)
        if name.split(".")[0] not in LAZY_ALLOWED | light | stdlib_ok
    ]
    assert unexpected == []


def test_a_lower_layer_never_imports_a_higher_one():
    # A second, dependency-free check of the layer order (import-linter runs in CI).
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).parts
        if len(rel) < 2 or rel[0] not in rank:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "varemi" and len(parts) > 1 and parts[1] in rank:
                    if rank[parts[1]] > rank[rel[0]]:
                        bad.append(f"{'/'.join(rel)}:{node.lineno} imports {name}")
    assert bad == []
