"""``infoflow plugins new``: a ready-to-install plugin package, written from templates.

The package ``infoflow-NAME`` has a pyproject with the ``infoflow.plugins`` entry point, a
plugin module (config, search space, a small model), a test file running the conformance kit,
a study spec and a README. It installs with ``pip install PATH`` and its tests pass as written.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from string import Template

from infoflow_track.errors import UserError
from infoflow_track.registry import NAME_RE, scan

TEMPLATES = Path(__file__).parent / "templates" / "plugin"
#: template file -> its path in the package, with {module} and {name} filled in.
LAYOUT = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
    "__init__.py.tmpl": "src/{module}/__init__.py",
    "plugin.py.tmpl": "src/{module}/plugin.py",
    "test_plugin.py.tmpl": "tests/test_plugin.py",
    "study.toml.tmpl": "studies/{name}.toml",
}


#: Longer names make file names (``infoflow_NAME/``, ``studies/NAME.toml``) no file system takes.
MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class PackageNames:
    """The names of a new plugin package, all derived from the plugin name."""

    name: str  # plugin name, e.g. "sparse-mlp"
    dist: str  # distribution, "infoflow-sparse-mlp"
    module: str  # import package, "infoflow_sparse_mlp"
    cls: str  # plugin class, "SparseMlpPlugin"

    @classmethod
    def of(cls, name: str) -> PackageNames:
        if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            raise UserError(
                f"plugin name {name[:40]!r}{'...' * (len(name) > 40)} is not valid: use 1 to "
                f"{MAX_NAME_LENGTH} lowercase letters, digits and dashes, starting with a "
                "letter, e.g. sparse-mlp"
            )
        camel = "".join(part.capitalize() for part in name.split("-"))
        return cls(name, f"infoflow-{name}", f"infoflow_{name.replace('-', '_')}", camel + "Plugin")


def write_package(name: str, directory: Path | None = None) -> tuple[PackageNames, Path]:
    """Write the package of plugin ``name`` into ``directory`` (default ./infoflow-NAME),
    which must not exist or be empty. Returns its names and folder; writes nothing on a
    UserError (bad name, name already registered, folder in use)."""
    names = PackageNames.of(name)
    _check_name_is_free(names)
    root = (directory or Path(names.dist)).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root} exists and is not an empty folder: choose another --dir")
    files = {
        root / target.format(module=names.module, name=names.name): _render(template, names)
        for template, target in LAYOUT.items()
    }
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write the package to {root}: {exc.strerror}") from None
    return names, root


def _check_name_is_free(names: PackageNames) -> None:
    """Refuse a name another plugin has, or whose package or module exists (infoflow-track)."""
    taken = importlib.util.find_spec(names.module) is not None
    try:
        metadata.distribution(names.dist)
        taken = True
    except metadata.PackageNotFoundError:
        pass
    if taken:
        raise UserError(
            f"plugin name '{names.name}' would make package {names.dist} (module "
            f"{names.module}), which is already installed: choose another name"
        )
    name = names.name
    found = scan()
    entry = found.usable.get(name) or found.disabled.get(name)
    if entry is not None:
        raise UserError(
            f"plugin name '{name}' is already registered by {entry.package} {entry.version}: "
            "a second package with it would make both broken; choose another name"
        )


def _render(template: str, names: PackageNames) -> str:
    from infoflow_track import __version__
    from infoflow_track.plugin import PLUGIN_API_VERSION

    release = re.match(r"\d+\.\d+", __version__)
    requirement = f"infoflow-track>={release[0]}" if release else "infoflow-track"
    summary = "one hidden layer of width units and a linear readout, trained by backprop"
    return Template((TEMPLATES / template).read_text()).substitute(
        name=names.name, dist=names.dist, module=names.module, cls=names.cls, summary=summary,
        api_version=PLUGIN_API_VERSION, requirement=requirement,
    )  # fmt: skip
