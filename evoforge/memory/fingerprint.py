"""A program's fingerprint: what stays when the changes that cannot alter its behaviour are erased.

LLMs often hand back their parent with a reworded comment, a rewritten docstring, new formatting or a local
variable renamed. Hashing the canonical syntax tree catches all of these as exact duplicates, before the
embedding comparison and at no cost. The renaming is deliberately conservative, so two programs with the same
fingerprint behave the same: only the variables a function assigns are renumbered; never its parameters (a
caller may pass them by keyword), module or class attributes (an evaluator may read them by name), builtins or
globals, nor a name that also appears as an attribute, a keyword argument or a string constant (it may be
looked up by name).
"""

from __future__ import annotations

import ast
import hashlib

from evoforge.tasks.tree import BundleError, decode_bundle, is_bundle

INTROSPECTION = frozenset({"locals", "vars", "globals", "dir", "eval", "exec", "compile", "__import__"})
"""Builtins that see variables by name: a program using any of them keeps all its names."""


def _drop_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return body[1:] or [ast.Pass()]
    return body


class _Docstrings(ast.NodeTransformer):
    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            node.body = _drop_docstring(node.body)
        return node


def _looked_up_by_name(tree: ast.AST) -> set[str]:
    """Identifiers a renaming must keep: attribute names, keyword argument names and string constants."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    args = function.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *(a for a in (args.vararg, args.kwarg) if a)]


def _function_locals(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Names a function assigns for itself (not its parameters, not its global/nonlocal ones)."""
    bound: set[str] = set()
    body = function.body if isinstance(function.body, list) else [function.body]
    declared: set[str] = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Global | ast.Nonlocal):
            declared.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            if not isinstance(node, ast.Lambda):
                bound.add(node.name)  # a nested def is a local of this function; its own body is its scope
            continue
        stack.extend(ast.iter_child_nodes(node))
    return bound - declared - {arg.arg for arg in _parameters(function)}


class _LocalNames(ast.NodeTransformer):
    """Renumbers each function's locals in order of first appearance (v0, v1, ...), scope by scope."""

    def __init__(self, keep: set[str]) -> None:
        self.keep = keep
        self.scopes: list[dict[str, str]] = []

    def _rename(self, name: str) -> str:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return name

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> ast.AST:
        args = node.args
        # defaults, annotations and decorators are evaluated in the enclosing scope
        args.defaults = [self.visit(d) for d in args.defaults]
        args.kw_defaults = [self.visit(d) if d is not None else None for d in args.kw_defaults]
        for arg in _parameters(node):
            arg.annotation = self.visit(arg.annotation) if arg.annotation else None
        if not isinstance(node, ast.Lambda):
            node.decorator_list = [self.visit(d) for d in node.decorator_list]
            node.returns = self.visit(node.returns) if node.returns else None
            node.name = self._rename(node.name)
        # a class body inside the function binds attributes, which must keep their names: leave such a function be
        has_class = any(isinstance(inner, ast.ClassDef) for inner in ast.walk(node))
        order = _first_appearance(node)
        local = [] if has_class else sorted(_function_locals(node) - self.keep, key=lambda n: (order.get(n, len(order)), n))
        offset = sum(len(scope) for scope in self.scopes)
        scope = {arg.arg: arg.arg for arg in _parameters(node)}  # a parameter shadows an outer local's renaming
        scope.update({name: f"v{offset + i}" for i, name in enumerate(local)})
        self.scopes.append(scope)
        node.body = [self.visit(s) for s in node.body] if isinstance(node.body, list) else self.visit(node.body)
        self.scopes.pop()
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._rename(node.id)
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        node.names = [self._rename(name) for name in node.names]
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        self.generic_visit(node)
        node.name = self._rename(node.name) if node.name else None
        return node


def _first_appearance(function: ast.AST) -> dict[str, int]:
    """Each identifier bound or used in `function`, numbered in the (deterministic) order ast.walk meets it."""
    order: dict[str, int] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Name):
            order.setdefault(node.id, len(order))
        elif isinstance(node, ast.ExceptHandler | ast.FunctionDef | ast.AsyncFunctionDef) and node.name:
            order.setdefault(node.name, len(order))
    return order


def _text_form(text: str) -> str:
    lines = (line.rstrip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def canonical_form(code: str) -> str:
    """The program with comments, docstrings and formatting erased and function locals renumbered; code that
    does not parse is returned with trailing whitespace and blank lines removed."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return _text_form(code)
    tree = _Docstrings().visit(tree)
    if not any(isinstance(node, ast.Name) and node.id in INTROSPECTION for node in ast.walk(tree)):
        tree = _LocalNames(_looked_up_by_name(tree)).visit(tree)
    return ast.dump(tree, annotate_fields=False)


def code_hash(code: str) -> str:
    """sha256 of `canonical_form(code)`: programs that differ only in comments, docstrings, formatting or the
    names of function locals hash the same. A tree program's bundle hashes its files' paths and canonical forms,
    so the fingerprint covers the whole evolvable set and a file's comments never tell two trees apart."""
    if is_bundle(code):
        try:
            files = decode_bundle(code)
        except BundleError:
            files = None
        if files is not None:
            # a config file is not Python, even when it parses as such ("lr: 0.1" is an annotation)
            parts = [f"{path}\0{canonical_form(text) if path.endswith('.py') else _text_form(text)}"
                     for path, text in sorted(files.items())]
            return hashlib.sha256("\0\0".join(parts).encode()).hexdigest()
    return hashlib.sha256(canonical_form(code).encode()).hexdigest()
