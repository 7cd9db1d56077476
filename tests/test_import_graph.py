"""The package's imports follow DESIGN.md's data flow: leaves first, nothing imported from a later
stage, no cycles. Imports are read with ``ast`` (nothing is imported), including the ones inside
functions: an import deferred for start-up speed still counts as an edge."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attnscope"

# Stages of the data flow, leaves first; a module imports only from its own stage or an earlier one.
# Keys are the first name under ``attnscope`` ("" is the package itself: the front door).
STAGES: list[set[str]] = [
    {"_lazy", "_version", "errors", "store", "datasets", "judges"},
    {"models"},
    {"hooks"},
    {"erasure", "sampling", "schedulers"},
    {"analyses"},
    {"figures", "runner"},
    {"report"},
    {"commands", "cli", ""},
]
STAGE = {part: index for index, parts in enumerate(STAGES) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the package."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that the file at ``path`` (module ``name``) imports anywhere in its body.

    ``from P import x`` counts as an import of the submodule ``P.x`` when there is one, else of ``P``.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def stage(module: str) -> int:
    parts = module.split(".")
    return STAGE[parts[1] if len(parts) > 1 else ""]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_module_belongs_to_a_stage():
    assert {module.split(".")[1] for module in package_modules() if "." in module} <= set(STAGE)


def test_no_module_imports_from_a_later_stage():
    backward = sorted(
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        if stage(target) > stage(source)
    )
    assert backward == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_see_a_backward_import_and_a_cycle():
    graph = {"attnscope.store.a": {"attnscope.report.b"}, "attnscope.report.b": {"attnscope.store.a"}}
    assert stage("attnscope.report.b") > stage("attnscope.store.a")
    assert cycles(graph) == [["attnscope.report.b", "attnscope.store.a"]]


def test_benchmarks_and_tests_do_not_import_commands():
    importers = sorted(
        str(path.relative_to(ROOT))
        for folder in ("benchmarks", "tests")
        for path in (ROOT / folder).glob("*.py")
        if any(
            (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("attnscope.commands"))
            or (isinstance(node, ast.Import) and any(a.name.startswith("attnscope.commands") for a in node.names))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    )
    assert importers == []


# --------------------------------------------------------------------------- one home per concept


def calls(path: Path) -> list[tuple[str, str]]:
    """``(callee, receiver)`` of every call of the file: ``tokenizer(x)`` → ``("tokenizer", "")``,
    ``self.pipe.tokenizer(x)`` → ``("tokenizer", "self.pipe")``, ``unet.named_modules()`` →
    ``("named_modules", "unet")``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                found.append((node.func.id, ""))
            elif isinstance(node.func, ast.Attribute):
                found.append((node.func.attr, ast.unparse(node.func.value)))
    return found


def callers(is_wanted) -> set[str]:
    """Package files (relative to ``attnscope/``) with a call that ``is_wanted(callee, receiver)``."""
    return {
        str(path.relative_to(PACKAGE))
        for path in package_modules().values()
        if any(is_wanted(callee, receiver) for callee, receiver in calls(path))
    }


TOKENIZER = r"_?tokenizer(_\d+)?"
ENCODING_METHODS = ("encode", "batch_encode_plus", "encode_plus", "convert_tokens_to_ids")


def is_tokenizer_call(callee: str, receiver: str) -> bool:
    """A tokenizer applied to text: ``tokenizer(...)``, ``pipe.tokenizer_2(...)``, ``self._tokenizer(...)``,
    or one of its encoding methods: ``pipe.tokenizer.encode(...)``."""
    if re.fullmatch(TOKENIZER, callee):
        return True
    return callee in ENCODING_METHODS and re.search(rf"(^|\.){TOKENIZER}$", receiver) is not None


# Besides models/prompts.py, only code that builds or trains a model of its own, or a judge reading its
# own answers, calls a tokenizer:
TOKENIZER_CALLERS = {
    "models/prompts.py",  # the one home of prompt tokens and text embeddings
    "models/toy/pipeline.py",  # the toy pipeline's own encode_prompt (a diffusers pipeline's method)
    "models/toy/train.py",  # training batches of captions
    "models/toy/pretrain_text.py",  # pre-training the toy text encoder
    "judges/vqa.py",  # the VQA judge's yes/no answer tokens, in its own vocabulary (judges precede models)
}


def test_only_models_prompts_tokenises_prompts():
    assert callers(is_tokenizer_call) <= TOKENIZER_CALLERS


def test_layer_discovery_is_only_in_models_layers():
    """Walking a model's modules to find its (cross-)attention layers happens in one place."""
    walkers = callers(lambda callee, receiver: callee in ("named_modules", "modules"))
    # erasure/loaders.py maps adapter key names to module paths (every module with a weight, not attention)
    assert walkers <= {"models/layers.py", "erasure/loaders.py"}


def test_tables_are_written_only_by_store_tables():
    writers = callers(lambda callee, receiver: callee in ("to_csv", "to_parquet", "DictWriter")
                      or (callee, receiver) in {("writer", "csv"), ("write_table", "pq")})
    assert writers == {"store/tables.py"}


def test_the_call_checks_see_a_tokenizer_and_a_table_writer(tmp_path):
    example = tmp_path / "example.py"
    example.write_text("ids = self.pipe.tokenizer(prompt).input_ids\nframe.to_csv(path)\nbuild_tokenizer()\n"
                       "pipe.tokenizer_2(prompt)\ntokenizer.encode(word)\ntext.encode('utf-8')\n")
    found = calls(example)
    assert {c for c in found if is_tokenizer_call(*c)} == {("tokenizer", "self.pipe"), ("tokenizer_2", "pipe"),
                                                           ("encode", "tokenizer")}
    assert ("to_csv", "frame") in found
