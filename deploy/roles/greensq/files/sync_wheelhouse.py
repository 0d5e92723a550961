"""Make a wheelhouse hold exactly a fresh build's wheels, with a SHA256SUMS manifest.

Usage: sync_wheelhouse.py BUILD_DIR WHEELHOUSE_DIR. Prints "changed" when the wheelhouse
had to be replaced, "unchanged" when it already held the same wheels. Hosts compare the
manifest alone to know whether they need the wheels again.
"""

import hashlib
import pathlib
import shutil
import sys

MANIFEST = "SHA256SUMS"


def manifest(directory):
    return "".join(f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n"
                   for wheel in sorted(directory.glob("*.whl")))


def sync(build, wheelhouse):
    wanted = manifest(build)
    sums = wheelhouse / MANIFEST
    if sums.exists() and sums.read_text() == wanted and manifest(wheelhouse) == wanted:
        return False
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for old in wheelhouse.glob("*.whl"):
        old.unlink()
    for wheel in build.glob("*.whl"):
        shutil.copyfile(wheel, wheelhouse / wheel.name)
    sums.write_text(wanted)
    return True


if __name__ == "__main__":
    print("changed" if sync(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])) else "unchanged")
