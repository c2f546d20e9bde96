"""The report's table cells: what a reader sees for numbers and for a value a step did not measure."""
from pipeline.report.blocks import Table, fmt, render_html, render_markdown


def test_cells_format_numbers_and_show_a_dash_for_missing_values():
    assert fmt(0.123456) == "0.1235" and fmt(12345) == "12,345" and fmt(None) == "-"
    table = Table(["step", "accuracy"], [["sft", 0.5], ["pretrain", None]])
    md, page = render_markdown("t", [table]), render_html("t", [table])
    assert "| pretrain | - |" in md and "None" not in md
    assert "<td>-</td>" in page and "None" not in page
