"""Build hook of rlhf-reward: generates rlhf_reward/rlhf_pb2.py from rlhf.c's
proto/rlhf.proto with protoc while the package is built, so generated code is
never committed and always matches the schema it was built from.

The schema is looked up at $RLHF_PROTO, else ../../proto/rlhf.proto beside this
file (a clone of rlhf.c). protoc is $PROTOC, else `protoc` on PATH (Debian:
apt-get install protobuf-compiler)."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _proto_path() -> str:
    path = os.environ.get("RLHF_PROTO") or os.path.join(HERE, "..", "..", "proto", "rlhf.proto")
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise SystemExit(
            f"rlhf-reward: the schema {path} is missing: build from a clone of rlhf.c "
            "(pip install reward_server/python) or set RLHF_PROTO to proto/rlhf.proto"
        )
    return path


def _protoc(proto: str, out_dir: str) -> None:
    exe = shutil.which(os.environ.get("PROTOC", "protoc"))
    if not exe:
        raise SystemExit(
            "rlhf-reward: protoc not found: apt-get install protobuf-compiler (or set PROTOC)"
        )
    os.makedirs(out_dir, exist_ok=True)
    cmd = [exe, f"--proto_path={os.path.dirname(proto)}", f"--python_out={out_dir}", proto]
    print("rlhf-reward: " + " ".join(cmd))
    subprocess.run(cmd, check=True)


class BuildPyWithProto(build_py):  # type: ignore[misc]  # setuptools is untyped here
    """build_py, then protoc into the built package (into the source package
    for an editable install, where that is what gets imported)."""

    def run(self) -> None:
        super().run()
        pkg = "rlhf_reward"
        editable = getattr(self, "editable_mode", False)
        out = os.path.join(HERE, pkg) if editable else os.path.join(self.build_lib, pkg)
        _protoc(_proto_path(), out)


setup(cmdclass={"build_py": BuildPyWithProto})
