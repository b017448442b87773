"""Build hooks that must be code: the Cython extensions and the protobuf modules."""

from __future__ import annotations

import os
import pathlib

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent
NATIVE_MODULES = ["_unionfind_c", "_contacts_c", "_degree_c", "_bulk_c"]


def generate_protos() -> None:
    """Compile protos/ into src/ (idlink.v1 and idlink.store.v1)."""
    from grpc_tools import protoc  # build-time dependency only

    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    # google/api/annotations.proto (HTTP bindings) ships with googleapis-common-protos,
    # beside the google.api modules the generated code imports.
    from google.api import annotations_pb2

    googleapis = pathlib.Path(annotations_pb2.__file__).parents[2]
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    for package_dir in {pathlib.Path(p).parent for p in protos}:
        init = ROOT / "src" / package_dir / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{include}",
        f"-I{googleapis}",
        f"--python_out={ROOT / 'src'}",
        f"--pyi_out={ROOT / 'src'}",
        f"--grpc_python_out={ROOT / 'src'}",
        *protos,
    ]
    old = os.getcwd()
    os.chdir(ROOT / "protos")
    try:
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
    finally:
        os.chdir(old)


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


def extensions() -> list[Extension]:
    if os.environ.get("IDLINK_PURE_PYTHON") == "1":
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(
            f"idlink._native.{name}",
            [f"cython_ext/idlink/_native/{name}.pyx"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17"],
        )
        for name in NATIVE_MODULES
    ]
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        include_path=["cython_ext"],
    )


if __name__ == "__main__":
    setup(ext_modules=extensions(), cmdclass={"build_py": BuildPyWithProtos})
