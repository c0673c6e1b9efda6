"""The README's table of memories and their read methods is generated from the class declarations
(``varmem.methods_table()``); this test fails when the two drift apart."""

import re
from pathlib import Path

import pytest

import varmem
from varmem.memory import methods_table, registered_memories

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE = re.compile(r"<!-- methods-table:start -->\n(.*?)\n<!-- methods-table:end -->", re.S)


def readme_table(text: str) -> str:
    found = TABLE.findall(text)
    assert len(found) == 1, "the README must hold exactly one generated methods table"
    return found[0]


def test_the_readme_table_is_the_generated_one():
    expected = methods_table()
    assert readme_table(README.read_text()) == expected, (
        "README.md's methods table is out of date: replace it with the output of varmem.methods_table()"
    )


def test_the_table_lists_every_memory_with_its_declared_methods():
    table = methods_table()
    for cls in registered_memories():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{cls.__name__}` |"))
        methods = re.findall(r"`(\w+)`", row.split("|")[2])
        assert methods[0] == cls.default_method and sorted(methods) == sorted(cls.methods)
    assert "`ModernHopfield` | `fixed_point` |" in table  # not sync/async/map, which it does not offer
    assert len(registered_memories()) >= 14


def test_a_drifted_table_is_caught():
    """Negative control: the old hand-written claim that ModernHopfield reads with sync/async/map."""
    old, new = "`ModernHopfield` | `fixed_point` |", "`ModernHopfield` | `sync`, `async`, `map` |"
    drifted = methods_table().replace(old, new)
    text = f"intro\n<!-- methods-table:start -->\n{drifted}\n<!-- methods-table:end -->\n"
    assert readme_table(text) != methods_table()
    with pytest.raises(AssertionError):
        readme_table("no table here")


def test_a_user_memory_joins_the_table():
    class _TableProbe(varmem.KernelDensityMemory):
        pass

    assert _TableProbe not in registered_memories()  # defined outside varmem's modules
    assert "`_TableProbe` | `exact`" in methods_table([_TableProbe])
