"""Every guide in guides/ (and the README) is executable documentation: its ```python blocks run in order, in one
namespace, from a temporary folder.  The guides assert what they claim."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[2]
GUIDES = sorted((ROOT / "guides").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def code_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def test_there_are_guides_with_code():
    assert GUIDES and all(code_blocks(p) for p in GUIDES)


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.name)
def test_guide_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__guide__"}
    for i, block in enumerate(code_blocks(path)):
        try:
            exec(compile(block, f"{path.name}[block {i}]", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"{path.name}, code block {i} failed: {type(e).__name__}: {e}") from e
