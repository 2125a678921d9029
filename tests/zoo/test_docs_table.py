"""docs/zoo.md shows a run of the whole zoo as it is defined now."""

import pathlib

from tests.zoo import architectures
from tests.zoo import test_zoo

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "zoo.md"


def test_docs_table_covers_every_cell():
    table = DOCS.read_text().split("<!-- zoo-table:begin -->")[1]
    table = table.split("<!-- zoo-table:end -->")[0]
    lines = table.strip().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["architecture", *test_zoo.TECHNIQUES], (
        "docs/zoo.md is out of date: run "
        "`python benchmarks/zoo_benchmark.py --write-docs`."
    )
    rows = {line.strip("|").split("|")[0].strip() for line in lines[2:]}
    assert set(architectures.ARCHITECTURES) <= rows
    for line in lines[2 : 2 + len(architectures.ARCHITECTURES)]:
        assert "not run" not in line, line
