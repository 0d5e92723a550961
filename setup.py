"""The build of greensq's compiled modules (setup.cfg holds everything else).

Each module of ``MODULES`` (services/shared/compiled.py) is compiled by Cython from its
own source into an extension beside it, ``_c_<module>``. A module that cannot be compiled
(no C compiler, no Python headers) is a warning, not an error: the install goes on and
that module runs as Python. ``GREENSQ_PURE_PYTHON`` set (to anything but 0), or Cython
missing (a build without isolation), builds none.
"""

import importlib.util
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

try:
    from Cython.Build import cythonize
except ImportError:
    cythonize = None

ROOT = Path(__file__).resolve().parent


def load_compiled():
    """services/shared/compiled.py, loaded from its file: greensq is not installed yet."""
    spec = importlib.util.spec_from_file_location(
        "greensq_compiled", ROOT / "services" / "shared" / "compiled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_of(module):
    """A module's file, by setup.cfg's package_dir: each top-level folder holds one
    subpackage of greensq (greensq.actors.topic -> actors/topic.py)."""
    return str(Path(*module.split(".")[1:]).with_suffix(".py"))


def package_tree():
    """A folder in build/ where the package's folders appear as greensq/<folder> (links),
    as Cython looks for a module's .pxd (``greensq.actors._c_topic`` ->
    ``greensq/actors/_c_topic.pxd``) and for what it cimports."""
    tree = ROOT / "build" / "cython" / "include"
    (tree / "greensq").mkdir(parents=True, exist_ok=True)
    for folder in ("actors", "services", "http", "client"):
        link = tree / "greensq" / folder
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", "..", "..", folder))
    return str(tree)


def extensions():
    compiled = load_compiled()
    if compiled.PURE_PYTHON or cythonize is None:
        return []
    return cythonize(
        # No debug information: a smaller wheel, built faster (profilers still see the
        # functions' names).
        [Extension(compiled.compiled_name(module), [source_of(module)],
                   extra_compile_args=["-g0"])
         for module in compiled.MODULES],
        build_dir="build/cython", include_path=[package_tree()], language_level=3,
        quiet=True,
        # Types come from the .pxd files only: the annotations stay documentation.
        compiler_directives={"annotation_typing": False})


class BuildOptionalExtensions(build_ext):
    """setuptools' build_ext, for which a compiled module that cannot be built is a warning,
    not an error, whatever the reason (no compiler, no Python headers)."""

    def build_extension(self, ext):
        try:
            if not self.reuse_inplace_build(ext):
                super().build_extension(ext)
        except Exception as exc:
            print(f"warning: {ext.name} not compiled ({exc}): it runs as pure Python",
                  file=sys.stderr)

    def reuse_inplace_build(self, ext):
        """A wheel built from a checkout whose ``pip install -e`` compiled a module since
        its C source was last generated (Cython writes it again when the module or a .pxd
        it uses changes) takes that build instead of compiling it again, as build_ext
        itself keeps an up-to-date module in build/. Whether it did."""
        if self.inplace:
            return False
        build_py = self.get_finalized_command("build_py")
        package, _, name = ext.name.rpartition(".")
        inplace = Path(build_py.get_package_dir(package),
                       name + sysconfig.get_config_var("EXT_SUFFIX"))
        if not inplace.exists() or newer_group(ext.sources + ext.depends, str(inplace)):
            return False
        target = self.get_ext_fullpath(ext.name)
        self.mkpath(str(Path(target).parent))
        self.copy_file(str(inplace), target)
        return True


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildOptionalExtensions})
