"""The mutants of tools/mutation.py: which AST edits a module's functions get, their line-free
ids, and how a mutant's code is swapped into the live function."""

from __future__ import annotations

import ast
import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
        ast.IsNot: ast.Is}
_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
        ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr,
        ast.BitOr: ast.BitAnd}


@dataclass(frozen=True)
class Mutant:
    """One edit. ``id`` is ``file:function:what#k``: the k-th edit ``what`` (counted from 0 in
    source order) inside ``function`` (a qualname). It carries no line number, so it stays the
    same when other functions of the file are edited, or lines are added above it."""

    id: str
    file: str
    function: str
    line: int
    what: str
    index: int  # position in the walk of the file, to find the node again
    stmt_line: int = 0  # first line of the statement around the edit (what coverage records)


def _targets(node: ast.AST):
    """(child node, description) for each mutation of ``node`` itself."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP:
                yield i, f"{type(op).__name__}->{_CMP[type(op)].__name__}"
    elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BIN:
        yield None, f"{type(node.op).__name__}->{_BIN[type(node.op)].__name__}"
    elif isinstance(node, ast.BoolOp):
        yield None, "and->or" if isinstance(node.op, ast.And) else "or->and"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        yield None, f"drop {type(node.op).__name__}"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        yield None, (f"{node.value}->{not node.value}" if type(node.value) is bool
                     else f"{node.value!r}->{node.value + 1!r}")
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        yield None, "return None"
    if isinstance(node, ast.AugAssign) or (isinstance(node, ast.Expr)
                                           and isinstance(node.value, ast.Call)):
        yield "drop", "drop statement"


def _apply(node: ast.AST, which, what: str) -> ast.AST:
    """The mutated replacement of ``node`` (a statement may become ``pass``)."""
    if which == "drop":
        return ast.Pass()
    if isinstance(node, ast.Compare):
        node.ops[which] = _CMP[type(node.ops[which])]()
    elif isinstance(node, ast.BinOp | ast.AugAssign):
        node.op = _BIN[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.UnaryOp):
        return node.operand
    elif isinstance(node, ast.Constant):
        node.value = (not node.value) if type(node.value) is bool else node.value + 1
    elif isinstance(node, ast.Return):
        node.value = None
    return node


def _walk(tree: ast.Module, lines: list[str]):
    """(function qualname, node, parent, field, index-in-field, statement line) for every node
    inside a function body, skipping docstrings, f-strings, decorators, arguments and annotations."""

    def visit(node, qual, parent, field, pos, stmt=None):
        if isinstance(node, ast.JoinedStr | ast.arg | ast.arguments):
            return
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(
                node.value.value, str):
            return  # a docstring or a bare string
        if isinstance(node, ast.AnnAssign):
            node_fields = [("value", node.value)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{qual}.{node.name}" if qual else node.name
            for i, child in enumerate(node.body):
                visit(child, name, node, "body", i)
            return
        else:
            node_fields = list(ast.iter_fields(node))
        if isinstance(node, ast.stmt):
            stmt = node
        if qual and getattr(node, "lineno", None) and not lines[node.lineno - 1].rstrip(
                ).endswith("# pragma: no mutate"):
            yield_list.append((qual, node, parent, field, pos, stmt.lineno))
        for fname, value in node_fields:
            if fname in ("annotation", "returns", "decorator_list"):
                continue
            if isinstance(value, list):
                for i, child in enumerate(value):
                    # zip(..., strict=True) -> False only shows with a bug elsewhere
                    if isinstance(child, ast.keyword) and child.arg == "strict":
                        continue
                    if isinstance(child, ast.AST):
                        visit(child, qual, node, fname, i, stmt)
            elif isinstance(value, ast.AST):
                visit(value, qual, node, fname, None, stmt)

    yield_list: list = []
    for i, stmt in enumerate(tree.body):
        visit(stmt, "", tree, "body", i)
    return yield_list


def mutants(source: str, file: str, functions: list[str] | None = None) -> list[Mutant]:
    """Every mutant of ``source`` inside the functions (qualnames) given, or all functions."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out, index, seen = [], 0, {}
    for qual, node, *_, stmt_line in _walk(tree, lines):
        for _which, what in _targets(node):
            top = qual.split(".<locals>")[0]
            if _in_function(tree, qual) and (functions is None or _selected(top, functions)):
                k = seen.get((qual, what), 0)
                seen[(qual, what)] = k + 1
                out.append(Mutant(f"{file}:{qual}:{what}#{k}", file, qual, node.lineno, what,
                                  index, stmt_line))
            index += 1
    return out


def _selected(qual: str, functions: list[str]) -> bool:
    return any(qual == f or qual.startswith(f + ".") for f in functions)


def _in_function(tree: ast.Module, qual: str) -> bool:
    """False for class-level code (``qual`` names only classes)."""
    node: ast.AST = tree
    for part in qual.split("."):
        found = next((n for n in getattr(node, "body", []) if isinstance(
            n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == part), None)
        if found is None:
            return True  # nested deeper than we track: inside a function
        node = found
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)


def mutated_tree(source: str, mutant: Mutant) -> ast.Module:
    """The module's AST with ``mutant`` applied."""
    tree = ast.parse(source)
    index = 0
    for _qual, node, parent, field, pos, _line in _walk(tree, source.splitlines()):
        for which, what in _targets(node):
            if index == mutant.index:
                assert what == mutant.what, (what, mutant)
                new = _apply(copy.deepcopy(node) if which != "drop" else node, which, what)
                slot = getattr(parent, field)
                if pos is None:
                    setattr(parent, field, new)
                else:
                    slot[pos] = new
                return ast.fix_missing_locations(tree)
            index += 1
    raise LookupError(f"mutant {mutant.id} not found in {mutant.file}")


def _code_for(code, qualname: str):
    for const in code.co_consts:
        if hasattr(const, "co_qualname"):
            if const.co_qualname == qualname:
                return const
            found = _code_for(const, qualname)
            if found is not None:
                return found
    return None


def _live_function(module, qual: str):
    obj = module
    for part in qual.split("."):
        obj = obj.__dict__[part] if isinstance(obj, type) else getattr(obj, part)
    if isinstance(obj, property):
        obj = obj.fget
    obj = getattr(obj, "__func__", obj)
    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj


def install(mutant: Mutant, source: str, module) -> None:
    """Swap the mutated code of the outermost function around ``mutant`` into ``module``."""
    top = _outer(mutant.function, ast.parse(source))
    code = compile(mutated_tree(source, mutant), str(REPO / mutant.file), "exec")
    new = _code_for(code, top)
    if new is None:
        raise LookupError(f"no code object {top} in {mutant.file}")
    live = _live_function(module, top)
    if len(new.co_freevars) == len(live.__code__.co_freevars):
        live.__code__ = new
        return
    # a method whose mutant drops its only super() call loses the __class__ cell: put a new
    # function with the cells it still needs into the class instead
    import types

    cells = dict(zip(live.__code__.co_freevars, live.__closure__ or (), strict=True))
    fn = types.FunctionType(new, live.__globals__, live.__name__, live.__defaults__,
                            tuple(cells[v] for v in new.co_freevars) or None)
    fn.__kwdefaults__, fn.__qualname__ = live.__kwdefaults__, live.__qualname__
    owner = module
    for part in top.split(".")[:-1]:
        owner = getattr(owner, part)
    setattr(owner, top.split(".")[-1], fn)


def _outer(qual: str, tree: ast.Module) -> str:
    """The outermost enclosing function reachable as a module attribute (nested functions are
    swapped with the function that defines them)."""
    parts, node, out = qual.split("."), tree, []
    for part in parts:
        found = next((n for n in getattr(node, "body", []) if isinstance(
            n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == part), None)
        if found is None:
            break
        out.append(part)
        if isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef):
            break
        node = found
    return ".".join(out)


def _function_digests(source: str) -> dict[str, str]:
    """``{qualname: digest}`` of the source of each function reachable as a module attribute
    (top-level functions and methods): a mutant's result is kept while its function is
    unchanged, whatever else in the file is edited."""
    tree, out = ast.parse(source), {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                text = ast.get_source_segment(source, node, padded=True) or ""
                decorators = "".join(ast.unparse(d) for d in node.decorator_list)
                out[prefix + node.name] = hashlib.sha256(
                    (decorators + text).encode()).hexdigest()[:16]

    visit(tree.body, "")
    return out
