"""The pure layout module: grouping, reading order, block kinds, rendering (no services)."""

from __future__ import annotations

import pytest

from shared.layout import (
    Kind,
    Line,
    PageLayout,
    Source,
    Word,
    group_lines,
    make_block,
    make_line,
    make_paragraph,
    refine_blocks,
    render_markdown,
    render_plain,
    summarise,
)
from shared.layout.grouping import merge_fragments, split_words
from shared.layout.kinds import font_size

CHAR, SPACE = 0.5, 0.3
"""Synthetic font: a character is half a line height wide, a space 0.3."""


def line(text: str, x: float, y: float, h: float = 30.0, conf: float = 0.9) -> Line:
    """A line as an engine boxes it: ``h`` is the ascender-to-descender height, a word
    without ascenders starts lower, one without descenders ends higher (as real glyphs do)."""
    words = []
    for token in text.split(" "):
        width = len(token) * CHAR * h
        tall = any(c.isupper() or c.isdigit() or c in "bdfhiklt#" for c in token)
        deep = any(c in "gjpqy,()" for c in token)
        top, bottom = y + (0 if tall else 0.22 * h), y + (h if deep else 0.78 * h)
        if token == "•":
            top, bottom = y + h * 0.35, y + h * 0.65
        words.append(Word(text=token, bbox=[x, top, x + width, bottom], confidence=conf))
        x += width + SPACE * h
    return make_line(words)


def column(texts: list[str], x: float, y: float, pitch: float = 42.0, h: float = 30.0) -> list:
    return [line(text, x, y + n * pitch, h) for n, text in enumerate(texts)]


def texts(blocks: list) -> list[tuple[str, str]]:
    return [(str(b.kind), b.text) for b in blocks]


LEFT = ["the left column starts at the top", "and goes on down the page here", "to its end."]
RIGHT = ["the right column comes after the", "left one has been read all", "the way down."]


def test_heading_over_two_columns_comes_first_then_left_then_right() -> None:
    heading = line("Harbour Report", 100, 50, h=60)
    fragments = [*column(RIGHT, 900, 200), heading, *column(LEFT, 100, 200)]
    blocks = group_lines(fragments)
    assert texts(blocks) == [
        ("heading", "Harbour Report"),
        ("paragraph", " ".join(LEFT)),
        ("paragraph", " ".join(RIGHT)),
    ]
    assert [len(b.lines) for b in blocks] == [1, 3, 3]
    assert blocks[1].bbox[:2] == [100, 200]
    assert blocks[1].bbox[3] == 200 + 2 * 42 + 0.78 * 30  # "to its end.": no descender


def test_columns_whose_lines_share_baselines_are_not_read_across() -> None:
    blocks = group_lines([*column(LEFT, 100, 200), *column(RIGHT, 900, 200)])
    assert [b.text for b in blocks] == [" ".join(LEFT), " ".join(RIGHT)]


def test_bulleted_list_one_block_per_item_continuation_lines_kept() -> None:
    fragments = [
        line("Things done this quarter:", 100, 100),
        line("• berth four was dredged", 120, 150),
        line("• two cranes were replaced", 120, 200),
        line("by newer ones", 150, 236),
        line("• night shifts were added", 120, 286),
    ]
    blocks = group_lines(fragments)
    assert texts(blocks) == [
        ("paragraph", "Things done this quarter:"),
        ("list_item", "• berth four was dredged"),
        ("list_item", "• two cranes were replaced by newer ones"),
        ("list_item", "• night shifts were added"),
    ]
    assert render_markdown([page(blocks)]).splitlines()[2:5] == [
        "- berth four was dredged", "- two cranes were replaced by newer ones",
        "- night shifts were added",
    ]


def test_misread_bullet_is_normalised_by_its_size() -> None:
    item = line("• check the cranes", 100, 100)
    misread = make_line([Word(text="¢", bbox=item.words[0].bbox, confidence=0.4),
                         *item.words[1:]])
    prose = line("e mail was read", 100, 150)  # full-height letter: not a bullet
    blocks = group_lines([misread, prose])
    assert texts(blocks) == [("list_item", "• check the cranes"), ("paragraph", "e mail was read")]


def test_small_table_is_one_block_read_row_by_row() -> None:
    rows = [("Berth", "Ships", "Tons"), ("North", "412", "9100"), ("South", "388", "8700")]
    fragments = [
        line(cell, x, 300 + n * 45)
        for n, row in enumerate(rows) for x, cell in zip((100, 400, 700), row, strict=True)
    ]
    blocks = group_lines([line("Busiest berths by ships handled", 100, 220), *fragments])
    assert [b.kind for b in blocks] == [Kind.PARAGRAPH, Kind.TABLE]
    table = blocks[1]
    assert table.text == "Berth\tShips\tTons\nNorth\t412\t9100\nSouth\t388\t8700"
    assert [x.text for x in table.lines] == ["Berth Ships Tons", "North 412 9100", "South 388 8700"]
    assert render_markdown([page([table])]) == (
        "| Berth | Ships | Tons |\n| --- | --- | --- |\n| North | 412 | 9100 |\n"
        "| South | 388 | 8700 |\n"
    )


def test_table_alone_is_not_taken_for_columns() -> None:
    fragments = [line(c, x, 100 + n * 45) for n in range(4) for x, c in ((100, "a1"), (500, "b2"))]
    blocks = group_lines(fragments)
    assert len(blocks) == 1
    assert blocks[0].kind is Kind.TABLE
    assert blocks[0].text == "a1\tb2\na1\tb2\na1\tb2\na1\tb2"


def test_table_in_right_column_next_to_text_keeps_the_columns() -> None:
    cells = [
        line(c, x, 200 + n * 45)
        for n, row in enumerate([("Berth", "Ships"), ("North", "412"), ("South", "388")])
        for x, c in zip((1000, 1200), row, strict=True)
    ]
    blocks = group_lines([*column(LEFT, 100, 200), *cells])
    assert texts(blocks) == [
        ("paragraph", " ".join(LEFT)), ("table", "Berth\tShips\nNorth\t412\nSouth\t388"),
    ]


def test_fragments_of_one_line_are_joined_far_ones_are_not() -> None:
    a, b = line("quarter than", 100, 100), line("before.", 100 + 12 * 15 + 20, 102)
    far = line("elsewhere", 1000, 100)
    merged = merge_fragments([b, far, a])
    assert sorted(x.text for x in merged) == ["elsewhere", "quarter than before."]


def test_paragraphs_split_by_indent_short_line_and_blocks_by_gap() -> None:
    fragments = [
        line("a first paragraph that runs the", 100, 100),
        line("and ends short.", 100, 140),
        line("a second one begins here and it", 100, 180),
        line("fills the line to the right", 100, 220),
        line("indented third paragraph here", 160, 260),
        line("after a blank line a new block", 100, 360),
    ]
    blocks = group_lines(fragments)
    assert [len(b.paragraphs) for b in blocks] == [3, 1]
    assert [p.text for p in blocks[0].paragraphs] == [
        "a first paragraph that runs the and ends short.",
        "a second one begins here and it fills the line to the right",
        "indented third paragraph here",
    ]


def test_confidence_at_every_level() -> None:
    low = make_line([Word(text="ab", bbox=[0, 0, 10, 10], confidence=0.5),
                     Word(text="cd", bbox=[12, 0, 22, 10], confidence=1.0)])
    high = make_line([Word(text="efghijkl", bbox=[0, 12, 40, 22], confidence=1.0)])
    assert low.confidence == 0.75
    paragraph = make_paragraph([low, high])
    assert paragraph.confidence == round((5 * 0.75 + 8 * 1.0) / 13, 4)  # weighed by characters
    block = make_block(Kind.PARAGRAPH, [paragraph])
    assert block.confidence == paragraph.confidence
    assert block.bbox == [0, 0, 40, 22]


def test_refine_blocks_splits_list_items_and_orders_columns() -> None:
    def block(lines: list[Line]):  # as tesseract gives them: one paragraph per block
        return make_block(Kind.PARAGRAPH, [make_paragraph(lines)])

    heading = block([line("Harbour Report", 100, 50, h=60)])
    left = block(column(LEFT, 100, 200))
    items = block([line("• one item here", 120, 350), line("• another item", 120, 400)])
    right = block(column(RIGHT, 900, 200))
    rows = [("Berth", "Ships"), ("North", "412")]
    table = block([
        make_line([w for x, c in zip((900, 1100), row, strict=True) for w in line(c, x, y).words])
        for y, row in zip((350, 395), rows, strict=True)
    ])
    blocks = refine_blocks([right, table, items, left, heading])
    assert texts(blocks) == [
        ("heading", "Harbour Report"),
        ("paragraph", " ".join(LEFT)),
        ("list_item", "• one item here"),
        ("list_item", "• another item"),
        ("paragraph", " ".join(RIGHT)),
        ("table", "Berth\tShips\nNorth\t412"),
    ]


def test_nothing_in_nothing_out() -> None:
    assert group_lines([]) == []
    assert refine_blocks([]) == []
    assert render_plain([]) == ""


def page(blocks: list, page_no: int = 1) -> PageLayout:
    return PageLayout(page_no=page_no, width=2000, height=2000, source=Source.OCR, scale=1.0,
                      blocks=blocks)


def test_render_plain_and_markdown() -> None:
    first = group_lines([
        line("Big Title", 100, 50, h=70),
        line("Smaller Heading", 100, 200, h=45),
        line("# not a heading, a paragraph", 100, 300),
        line("- and one item", 120, 380),
    ])
    second = group_lines([line("second page", 100, 100)])
    assert [b.kind for b in first] == [Kind.HEADING, Kind.HEADING, Kind.PARAGRAPH, Kind.LIST_ITEM]
    pages = [page(first), page(second, 2)]
    assert render_markdown(pages) == (
        "# Big Title\n\n## Smaller Heading\n\n\\# not a heading, a paragraph\n\n"
        "- and one item\n\n---\n\nsecond page\n"
    )
    assert render_plain(pages) == (
        "Big Title\n\nSmaller Heading\n\n# not a heading, a paragraph\n\n- and one item\n"
        "\fsecond page\n"
    )


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_rules_hold_at_any_resolution(scale: float) -> None:
    heading = line("Harbour Report", 100 * scale, 50 * scale, h=60 * scale)
    fragments = [heading, *column(LEFT, 100 * scale, 200 * scale, 42 * scale, 30 * scale),
                 *column(RIGHT, 900 * scale, 200 * scale, 42 * scale, 30 * scale)]
    assert [b.kind for b in group_lines(fragments)] == [Kind.HEADING, Kind.PARAGRAPH,
                                                        Kind.PARAGRAPH]


def test_summary_counts_pages_words_confidence_and_sources() -> None:
    ocr = page(group_lines([line("two words", 100, 100, conf=0.5)]))
    text = PageLayout(page_no=2, width=10, height=10, source=Source.TEXT_LAYER, scale=2.0,
                      blocks=group_lines([line("three more words", 100, 100, conf=1.0)]))
    summary = summarise([ocr, text])
    assert (summary.pages, summary.words, summary.sources) == (2, 5, {"ocr": 1, "text_layer": 1})
    assert summary.mean_confidence == round((2 * 0.5 + 3 * 1.0) / 5, 4)
    assert summarise([]).mean_confidence is None


def test_font_size_is_not_thrown_by_one_odd_word_box() -> None:
    plain = line("waiting times fell by a third", 100, 100)
    odd = make_line([*plain.words[:-1], Word(text="third", bbox=[600, 80, 700, 160],
                                             confidence=0.5)])  # merged with a speck
    assert font_size(odd) == pytest.approx(font_size(plain), rel=0.05)
    run = make_line(split_words("waiting times fell by a third", [100, 100, 500, 130], 0.9))
    assert font_size(run) == pytest.approx(30 / 0.92)  # one box for the run: its letters decide
