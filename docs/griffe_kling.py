"""A griffe extension for the API reference: attrs classes and Sphinx-style roles in docstrings.

- ``@attrs.frozen`` / ``@attrs.define`` classes get the ``__init__`` attrs makes (griffe only
  knows dataclasses), so the reference shows ``Job(image, video, prompt=None, ...)``, and their
  fields show their defaults instead of the ``attrs.field(...)`` call.
- ``:class:`Task```, ``:meth:`close```, ``:func:`~kling_async.journal.release_jobs``` and the like
  become cross-references, resolved from the docstring's own scope as Sphinx would. A target that
  does not resolve stays a reference to the name as written, so ``mkdocs build --strict`` fails on
  it instead of rendering a dead name.
- reST leftovers read as Markdown: a paragraph's closing ``::`` (a literal block follows, which
  Markdown already shows as code from its indent) becomes ``:``, and the ``Bounds:`` paragraph of a
  module docstring (a note on the package's layering, for its developers) is left out.
- An attribute set in a method (``self.message = message``) shows its name and docstring, not the
  right-hand side of that assignment.

Loaded by mkdocstrings from ``mkdocs.yml``; not part of the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ATTRS_DECORATORS = {"attrs.frozen", "attrs.define", "attrs.mutable", "attr.s", "attr.attrs"}
ATTRS_FIELDS = {"attrs.field", "attr.ib", "attr.attrib"}
ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):`(~?)([\w.]+?)(\(\))?`")
LITERAL_MARK = re.compile(r"^(.*?)[ \t]*::$", re.M)
BOUNDS = re.compile(r"^Bounds:.*?(?:\n\n|\Z)", re.M | re.S)


def _call_path(expr: object) -> str | None:
    """The dotted path of a decorator or call expression, whether called or not."""
    if isinstance(expr, griffe.ExprCall):
        expr = expr.function
    path = getattr(expr, "canonical_path", None)
    return path if isinstance(path, str) else None


def _arguments(expr: object) -> dict[str, Any]:
    """The keyword arguments of a call expression (``attrs.field(default=1)``), by name."""
    if not isinstance(expr, griffe.ExprCall):
        return {}
    return {arg.name: arg.value for arg in expr.arguments if isinstance(arg, griffe.ExprKeyword)}


def _attrs_decorator(cls: griffe.Class) -> griffe.Decorator | None:
    for decorator in cls.decorators:
        if _call_path(decorator.value) in ATTRS_DECORATORS:
            return decorator
    return None


def _is_field(member: griffe.Object | griffe.Alias) -> bool:
    if not isinstance(member, griffe.Attribute) or member.annotation is None:
        return False
    labels = member.labels
    # Properties and ClassVars (a class attribute only) are not fields.
    return "property" not in labels and not (
        "class-attribute" in labels and "instance-attribute" not in labels
    )


def _fields(cls: griffe.Class, kw_only: bool) -> list[griffe.Parameter]:
    parameters = []
    for member in list(cls.members.values()):
        if not isinstance(member, griffe.Attribute) or not _is_field(member):
            continue
        args: dict[str, Any] = {}
        default: Any = member.value
        if _call_path(member.value) in ATTRS_FIELDS:
            args = _arguments(member.value)
            if "factory" in args:
                default = griffe.ExprCall(function=args["factory"], arguments=[])
            else:
                default = args.get("default")
            member.value = default  # shown as the field's default, not the attrs.field call
        if str(args.get("init")) == "False":
            continue
        member.labels.discard("class-attribute")
        keyword = kw_only or str(args.get("kw_only")) == "True"
        kind = (
            griffe.ParameterKind.keyword_only
            if keyword
            else griffe.ParameterKind.positional_or_keyword
        )
        parameters.append(
            griffe.Parameter(
                member.name.lstrip("_"),  # attrs drops a leading underscore in __init__
                annotation=member.annotation,
                kind=kind,
                default=default,
                docstring=member.docstring,
            )
        )
    return parameters


def _add_attrs_init(cls: griffe.Class) -> None:
    decorator = _attrs_decorator(cls)
    if decorator is None or "__init__" in cls.members:
        return
    kw_only = str(_arguments(decorator.value).get("kw_only")) == "True"
    parameters = _fields(cls, kw_only)
    parameters.sort(key=lambda p: p.kind is griffe.ParameterKind.keyword_only)
    init = griffe.Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=griffe.Parameters(
            griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
            *parameters,
        ),
        returns="None",
    )
    cls.set_member("__init__", init)


def _objects(obj: griffe.Object) -> list[griffe.Object]:
    """``obj`` and every object defined in it (not the names it imports)."""
    found = [obj]
    for member in obj.members.values():
        if isinstance(member, griffe.Object):
            found.extend(_objects(member))
    return found


def _enclosing_class(obj: griffe.Object | None) -> griffe.Class | None:
    while obj is not None and not isinstance(obj, griffe.Class):
        obj = obj.parent
    return obj


class KlingDocs(griffe.Extension):
    """Give attrs classes their ``__init__``, and turn Sphinx roles into cross-references."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the whole package once it is loaded, when every name can be resolved."""
        self._package = pkg
        objects = _objects(pkg)
        self._classes = [obj for obj in objects if isinstance(obj, griffe.Class)]
        for obj in objects:
            labels = obj.labels
            method_set = "instance-attribute" in labels and "class-attribute" not in labels
            if isinstance(obj, griffe.Attribute) and method_set:
                obj.value = None  # the value assigned in a method, e.g. ``self.x = x``
        for cls in self._classes:
            _add_attrs_init(cls)
        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj, obj.docstring.value)

    def _rewrite(self, scope: griffe.Object, text: str) -> str:
        def reference(match: re.Match[str]) -> str:
            short, target, call = match.group(1), match.group(2), match.group(3) or ""
            path = self._resolve(scope, target) or target
            shown = target.rsplit(".", 1)[-1] if short else target
            return f"[`{shown}{call}`][{path}]"

        text = ROLE.sub(reference, text)
        if isinstance(scope, griffe.Module):
            text = BOUNDS.sub("", text).rstrip()
        return LITERAL_MARK.sub(lambda m: f"{m.group(1)}:" if m.group(1).strip() else "", text)

    def _resolve(self, scope: griffe.Object, target: str) -> str | None:
        """The full path of ``target`` as seen from ``scope``, or None."""
        if target in self._package.modules_collection:  # already a full path
            return target
        head, _, rest = target.partition(".")
        base: str | None
        try:
            base = scope.resolve(head)
        except griffe.NameResolutionError:
            base = self._resolve_member(scope, head)
        if base is None and head in self._package.members:
            base = f"{self._package.path}.{head}"  # a public name of the package
        if base is None:
            return None
        return f"{base}.{rest}" if rest else base

    def _resolve_member(self, scope: griffe.Object, name: str) -> str | None:
        """A method named in a class's docstring: inherited, or defined by a subclass."""
        cls = _enclosing_class(scope)
        if cls is None:
            return None
        if name in cls.all_members:
            return f"{cls.path}.{name}"
        for other in self._classes:
            bases = {getattr(base, "canonical_path", str(base)) for base in other.bases}
            if cls.path in bases and name in other.members:
                return f"{other.path}.{name}"
        return None
