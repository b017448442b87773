"""Build hooks that must be code: the Cython extensions and the protobuf modules."""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent
NATIVE_MODULES = ["_unionfind_c", "_contacts_c", "_degree_c", "_bulk_c"]
# Compiled only where OpenSSL's development files are (libssl-dev: `make build` installs it
# where it may); elsewhere the pure-Python twin serves, and the build says so.
NEEDS_OPENSSL = {"_bulk_c"}
OPENSSL_PROBE = """#include <openssl/evp.h>
int main(void) { EVP_CIPHER_CTX_free(EVP_CIPHER_CTX_new()); return 0; }
"""


def openssl_available() -> bool:
    """Whether a program can be compiled against OpenSSL's headers and linked with libcrypto."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as folder:
        source = pathlib.Path(folder) / "probe.c"
        source.write_text(OPENSSL_PROBE)
        try:
            objects = compiler.compile([str(source)], output_dir=folder)
            compiler.link_executable(objects, "probe", output_dir=folder, libraries=["crypto"])
        except Exception:
            return False
    return True


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

    names = list(NATIVE_MODULES)
    if not openssl_available():
        print(
            "OpenSSL development files (libssl-dev) not found: "
            f"{', '.join(sorted(NEEDS_OPENSSL))} not compiled, the pure-Python twin serves",
            file=sys.stderr,
        )
        names = [name for name in names if name not in NEEDS_OPENSSL]
    exts = [
        Extension(
            f"idlink._native.{name}",
            [f"cython_ext/idlink/_native/{name}.pyx"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17"],
        )
        for name in names
    ]
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        include_path=["cython_ext"],
    )


if __name__ == "__main__":
    setup(ext_modules=extensions(), cmdclass={"build_py": BuildPyWithProtos})
