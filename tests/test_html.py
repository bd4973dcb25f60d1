"""evaluators/html.py: the report markdown as HTML, cells styled, every run text escaped."""

from evaluators.html import cell_html, csv_table, fmt, markdown, table


def test_markdown_tables_lists_and_paragraphs():
    html = markdown("**Title** with `code`\n\n| m | a |\n| --- | ---: |\n| dft | 41.40 [38.4, 44.3] * |\n\n"
                    "**Flags**\n- one\n- two\n\nplain")
    assert '<p class="caption"><strong>Title</strong> with <code>code</code></p>' in html
    assert '<td class="num">41.40 <span class="ci">[38.4, 44.3]</span> <span class="sig"' in html
    assert "<ul><li>one</li><li>two</li></ul>" in html and html.endswith('<p class="caption">plain</p>')
    assert "---" not in html  # the alignment row is not a data row


def test_cells_and_values():
    assert cell_html("**42.08** [39.2, 45.1]").startswith("<strong>42.08</strong>")
    assert cell_html("+3.12 [-15.6, +21.9] †").endswith('title="over the shared problems only">†</span>')
    assert cell_html("<b>dft</b>") == "&lt;b&gt;dft&lt;/b&gt;"
    assert [fmt(v) for v in (None, True, float("nan"), 1.97e9, 41.456, 0.281, 7)] == \
        ["-", "yes", "-", "1.97e+09", "41.46", "0.281", "7"]
    assert table(["a<"], [["<i>"]]) == "<table><thead><tr><th>a&lt;</th></tr></thead><tbody><tr><td>&lt;i&gt;</td></tr></tbody></table>"


def test_csv_table_says_when_rows_are_cut(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("step,score\n" + "".join(f"{i},{i / 10}\n" for i in range(5)))
    html = csv_table(path, max_rows=3)
    assert html.count("<tr>") == 4 and "first 3 of 5 rows; all in x.csv" in html
