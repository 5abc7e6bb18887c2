"""tools/scan_outputs.py, the check that no executed notebook shows its reader a warning or an error
(make test runs it on the notebooks it executed; the book build on the pages' notebooks)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("scan_outputs", ROOT / "tools" / "scan_outputs.py")
scan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scan)


def _notebook(tmp_path, *outputs, name="nb.ipynb") -> Path:
    cells = [{"cell_type": "markdown", "source": "A warning about routers, in prose.", "metadata": {}},
             {"cell_type": "code", "source": "print(1)", "outputs": [{"output_type": "stream", "name": "stdout",
                                                                    "text": "loss 3.95\n"}], "metadata": {}}]
    cells += [{"cell_type": "code", "source": "x", "outputs": [o], "metadata": {}} for o in outputs]
    path = tmp_path / name
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_a_clean_notebook_passes(tmp_path):
    source = {"output_type": "execute_result", "execution_count": 1, "metadata": {},  # displayed source code
              "data": {"text/plain": "class CompatibilityWarning(UserWarning):\n    pass\n"}}
    said = {"output_type": "stream", "name": "stdout", "text": "the check warns (CompatibilityWarning): base differs\n"}
    assert scan.findings(_notebook(tmp_path, source, said)) == []
    assert scan.main([str(tmp_path)]) == 0


@pytest.mark.parametrize("output, channel", [
    ({"output_type": "stream", "name": "stderr", "text": "train.py:80: UserWarning: converting a tensor\n"}, "stderr"),
    ({"output_type": "stream", "name": "stderr", "text": "careful: this will warn you\n"}, "stderr"),
    ({"output_type": "stream", "name": "stdout", "text": "FutureWarning: groupby will change\n"}, "stdout"),
    ({"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}, "error"),
])
def test_a_warning_or_error_is_found(tmp_path, output, channel):
    found = scan.findings(_notebook(tmp_path, output))
    assert len(found) == 1 and f"code cell 2 ({channel})" in found[0], found
    assert scan.main([str(tmp_path / "nb.ipynb")]) == 1


def test_an_unexecuted_notebook_or_nothing_to_scan_fails(tmp_path, capsys):
    path = _notebook(tmp_path)
    nb = json.loads(path.read_text())
    for c in nb["cells"]:
        c["outputs"] = [] if c["cell_type"] == "code" else c.get("outputs")
    path.write_text(json.dumps(nb))
    assert "was it executed" in scan.findings(path)[0]
    assert scan.main([str(tmp_path / "empty")]) == 1 and "no executed notebooks" in capsys.readouterr().err
