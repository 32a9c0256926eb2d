"""Packaging hook: the shipped models (baseline/, searched/) and the user recipes (recipes/) travel inside the
wheel as ``drivecompress/_shipped/``, so that ``drivecompress eval baseline`` and ``demo`` work from a wheel
outside the checkout. In a checkout the top-level folders are used directly (``drivecompress.data.gtsrb.shipped``).
Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("baseline", "searched", "recipes")


class BuildWithShipped(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "drivecompress" / "_shipped"
        for name in SHIPPED:
            if (root / name).is_dir():
                shutil.copytree(root / name, target / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithShipped})
