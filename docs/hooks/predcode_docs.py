"""MkDocs hooks of the predcode site (listed under ``hooks:`` in mkdocs.yml).

* ``<!-- registry: NAME -->`` in a page is replaced by a table generated from the code's
  registries (``rules``, ``solvers``, ``energies``, ``models``, ``model-factories``,
  ``experiments``), so the
  site lists exactly what the library has.
* After the build, MathJax (from the ``django-static-mathjax`` package on PyPI, installed
  with the ``docs`` extra) is copied into ``site/assets/mathjax``: the site typesets its
  equations without a network connection.
"""

from __future__ import annotations

import inspect
import re
import shutil
from importlib import resources
from pathlib import Path

MARKER = re.compile(r"<!--\s*registry:\s*([\w-]+)\s*-->")
MATHJAX_TARGET = "assets/mathjax"


def _first_line(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ").rstrip(":")
    line = re.sub(r":(?:class|func|meth|mod|attr|exc):`~?([^`]*)`", r"`\1`", line)
    line = re.sub(r":math:`([^`]*)`", r"\\(\1\\)", line)
    return line.replace("|", "\\|")


def _public_name(obj) -> str:
    """The shortest public path of ``obj``: ``predcode.X``, ``predcode.rules.X`` or its module's."""
    import predcode
    import predcode.rules

    for package in (predcode, predcode.rules):
        if getattr(package, obj.__name__, None) is obj and obj.__name__ in package.__all__:
            return f"{package.__name__}.{obj.__name__}"
    return f"{obj.__module__}.{obj.__name__}"


def rules_table() -> str:
    from predcode.app.registry import RULES

    rows = ["| `--rule` | class | what it is |", "|---|---|---|"]
    for name, entry in RULES.items():
        rows.append(f"| `{name}` | `{_public_name(entry.builds)}` | {_first_line(entry.builds)} |")
    return "\n".join(rows)


def solvers_table() -> str:
    from predcode.inference import SOLVERS

    rows = ["| `--solver` | class | what it is |", "|---|---|---|"]
    for name, entry in SOLVERS.items():
        rows.append(f"| `{name}` | `{_public_name(entry.builds)}` | {_first_line(entry.builds)} |")
    return "\n".join(rows)


def _math(obj) -> str:
    """The first ``.. math::`` line of ``obj``'s docstring as inline math, or ''."""
    found = re.search(r"^\s*\.\. math::\s*(.+)$", inspect.getdoc(obj) or "", re.M)
    return f"\\({found.group(1).strip()}\\)" if found else ""


def energies_table() -> str:
    from predcode.energy import ENERGIES

    by_class: dict[type, list[str]] = {}
    for name, entry in ENERGIES.items():
        by_class.setdefault(entry.builds, []).append(name)
    rows = [
        "| name in `pc.Node(...)` / `--output-energy` | class | per-sample energy | what it is |",
        "|---|---|---|---|",
    ]
    for cls, names in by_class.items():
        tex = _math(cls).replace("\\|", "\\Vert ").replace("|", "\\vert ")  # no table pipes
        rows.append(f"| {', '.join(f'`{n}`' for n in names)} | `{_public_name(cls)}` | {tex} | {_first_line(cls)} |")
    return "\n".join(rows)


def models_table() -> str:
    from predcode.app.registry import MODELS

    rows = ["| `--model` | built by | what it is |", "|---|---|---|"]
    for name, entry in MODELS.items():
        fn = entry.builds
        rows.append(f"| `{name}` | `predcode.models.{fn.__name__}` | {_first_line(fn)} |")
    return "\n".join(rows)


def factories_table() -> str:
    import predcode.models as models

    rows = ["| `predcode.models.` | what it builds |", "|---|---|"]
    for name in models.__all__:
        obj = getattr(models, name)
        if not callable(obj) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        try:
            params = ", ".join(
                ("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "") + p.name
                for p in inspect.signature(obj).parameters.values()
            )
        except (TypeError, ValueError):
            params = "..."
        rows.append(f"| `{name}({params})` | {_first_line(obj)} |")
    return "\n".join(rows)


def experiments_table(results: Path) -> str:
    from predcode.experiments import registry
    from predcode.experiments.runtimes import runtime_text

    rows = ["| `predcode repro NAME` | what it measures | default run (2 CPU cores) | module |", "|---|---|---|---|"]
    for name, exp in registry().items():
        summary = re.sub(r"\s*\(?issue\s*#?\d+[^):]*[):]\s*", "", exp.summary)
        rows.append(
            f"| `{name}` | {summary.replace('|', '/')} | {runtime_text(name, results)} | `{exp.run.__module__}` |"
        )
    return "\n".join(rows)


TABLES = {
    "rules": rules_table,
    "solvers": solvers_table,
    "energies": energies_table,
    "models": models_table,
    "model-factories": factories_table,
    "experiments": experiments_table,
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    def table(match: re.Match) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise ValueError(f"{page.file.src_path}: unknown registry table '{name}'; one of {sorted(TABLES)}")
        if name == "experiments":
            return experiments_table(Path(config.config_file_path).parent / "results")
        return TABLES[name]()

    return MARKER.sub(table, markdown)


def mathjax_source() -> Path:
    """The folder of MathJax's ``es5`` build inside the ``django-static-mathjax`` package."""
    try:
        root = resources.files("mathjax")
    except ModuleNotFoundError:
        raise SystemExit(
            "the site's math renderer comes from the django-static-mathjax package: pip install 'predcode[docs]'"
        ) from None
    return Path(str(root)) / "static" / "mathjax" / "es5"


def on_post_build(config) -> None:
    source = mathjax_source()
    target = Path(config.site_dir) / MATHJAX_TARGET
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(source / "tex-mml-chtml.js", target / "tex-mml-chtml.js")
    for sub in ("output/chtml/fonts/woff-v2", "input/tex/extensions", "ui"):  # fonts, autoloads
        shutil.copytree(source / sub, target / sub)
