"""Griffe extension of the predcode site: docstrings written with Sphinx roles render as
Markdown for mkdocstrings.

* ``:math:`x``` becomes inline math ``\\(x\\)``; a ``.. math::`` directive becomes a display
  block ``\\[ ... \\]`` (lines with ``&`` or ``\\\\`` wrapped in an ``aligned`` environment).
* ``:class:`~predcode.graph.PCGraph``` (also ``:func:``, ``:meth:``, ``:attr:``, ``:mod:``,
  ``:exc:``, ``:data:``, ``:obj:``) becomes a cross-reference to the object, resolved in the
  scope of the docstring's owner; ``~`` shows the last name only, ``title <target>`` shows
  the title.  A target the site does not render (a private helper) stays code without a link.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(class|func|meth|attr|mod|exc|data|obj|const):`([^`]+)`")
MATH = re.compile(r":math:`([^`]+)`")
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def _display_math(lines: list[str], start: int) -> tuple[list[str], int]:
    """The ``\\[ ... \\]`` block of the directive at ``lines[start]`` and the next line index."""
    head = DIRECTIVE.match(lines[start])
    indent = head.group("indent")
    body = [head.group("first")] if head.group("first").strip() else []
    i = start + 1
    while i < len(lines):
        line = lines[i]
        if line.strip() and (len(line) - len(line.lstrip())) <= len(indent):
            break
        if not line.strip() and body and (i + 1 >= len(lines) or not lines[i + 1].startswith(indent + " ")):
            break
        if line.strip() or body:
            body.append(line.strip())
        i += 1
    while body and not body[-1]:
        body.pop()
    tex = "\n".join(b for b in body if b)
    if "&" in tex or "\\\\" in tex:
        tex = "\\begin{aligned}\n" + tex + "\n\\end{aligned}"
    block = ["", indent + "\\[", *(indent + t for t in tex.split("\n")), indent + "\\]", ""]
    return block, i


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` as seen from ``obj``, or ``None``."""
    if target.startswith("predcode."):
        return target
    head, _, rest = target.partition(".")
    scope: Any = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
            return path + ("." + rest if rest else "")
        except (griffe.NameResolutionError, AttributeError, KeyError):
            pass
        if head in getattr(scope, "members", {}):
            return f"{scope.path}.{head}" + ("." + rest if rest else "")
        scope = scope.parent
    return None


def convert(text: str, obj: griffe.Object) -> str:
    """``text`` (a docstring) with its Sphinx roles and math directives as Markdown."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if DIRECTIVE.match(lines[i]):
            block, i = _display_math(lines, i)
            out.extend(block)
            continue
        out.append(lines[i])
        i += 1
    text = "\n".join(out)
    text = MATH.sub(lambda m: "\\(" + m.group(1) + "\\)", text)

    def role(match: re.Match) -> str:
        kind, content = match.groups()
        explicit = re.fullmatch(r"(.+?)\s*<([^>]+)>", content)
        if explicit:
            title, target = explicit.group(1), explicit.group(2)
        else:
            target = content.lstrip("~!")
            title = target.rsplit(".", 1)[-1] if content.startswith("~") else target
        if kind in ("func", "meth") and not title.endswith(")"):
            title += "()"
        path = _resolve(obj, target)
        code = f"<code>{title}</code>"
        if path is None:
            return code
        return f'<autoref identifier="{path}" optional>{code}</autoref>'

    return ROLE.sub(role, text)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of the loaded package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)

        walk(pkg)
