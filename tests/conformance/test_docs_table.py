"""The docs' coverage table is the table of a green run of the matrix."""

from tests.conformance import coverage_table


def test_docs_table_is_the_green_table():
    assert coverage_table.docs_table() == coverage_table.green_table(), (
        "docs/conformance.md is out of date: run "
        "`python tests/conformance/coverage_table.py --write-docs`."
    )
