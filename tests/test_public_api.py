"""The top-level package: public names and a light import."""

from __future__ import annotations

import subprocess
import sys

import rbr


def test_all_names_exist():
    for name in rbr.__all__:
        assert hasattr(rbr, name), name


def test_import_does_not_load_heavy_stacks():
    code = (
        "import sys, rbr; "
        "print(','.join(m for m in ('torch', 'transformers', 'sklearn', 'pyarrow') "
        "if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert output == ""
