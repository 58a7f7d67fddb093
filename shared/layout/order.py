"""Reading order by recursive XY-cut, columns first.

A region is cut at a vertical gutter (a gap of at least ``COLUMN_GAP`` line heights in
the projection of its items onto the x axis) whenever there is one: a two-column page is
read down the left column, then the right. Without a gutter the region is cut into
horizontal bands, and consecutive bands that share a gutter are kept together as one
section: a heading above both columns bridges the gutter, so it is a section of its own
and comes first, and the columns below it are one section, read column by column. The one
exception: when the parts on both sides of a gutter are made of short items that sit on
common rows, the region is a table and is read row by row (a gutter between the columns
of a table is not a column of text).

The result is a list of *rows*: items side by side on one band, left to right. Text
lines of a column are rows of one item; the cells of a table row are one row.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from shared.layout.model import Bbox

T = TypeVar("T")

COLUMN_GAP = 1.5
"""Minimum width of a gutter, in median line heights."""

TABLE_MAX_CHARS = 16
"""A table column holds short cells: at most this many characters per item (median); a
column of text has lines of 30 to 80."""


class _Cutter(Generic[T]):
    def __init__(self, bbox: Callable[[T], Bbox], chars: Callable[[T], float], unit: float):
        self.bbox, self.chars, self.unit = bbox, chars, unit

    def split(self, items: Sequence[T], axis: int, min_gap: float) -> list[list[T]]:
        """Groups of ``items`` separated by empty stripes wider than ``min_gap``, in order."""
        ordered = sorted(items, key=lambda item: self.bbox(item)[axis])
        groups: list[list[T]] = []
        end = float("-inf")
        for item in ordered:
            box = self.bbox(item)
            if not groups or box[axis] - end > min_gap:
                groups.append([])
                end = box[axis + 2]
            groups[-1].append(item)
            end = max(end, box[axis + 2])
        return groups

    def order(self, items: Sequence[T]) -> list[list[T]]:
        if len(items) <= 1:
            return [list(items)] if items else []
        columns = self.split(items, 0, COLUMN_GAP * self.unit)
        bands = self.split(items, 1, 0.0)
        if len(columns) > 1:
            if len(bands) == 1:  # one band split by gutters: the cells of one row
                return [sorted(items, key=lambda item: self.bbox(item)[0])]
            groups = self.tables(columns)
            parts = groups if len(groups) > 1 else bands  # a table alone: row by row
            return [row for part in parts for row in self.order(part)]
        if len(bands) == 1:
            return self.rows(items)
        sections = self.sections(bands)
        if len(sections) == 1:  # cannot happen (the whole region has no gutter); never loop
            return self.rows(items)
        return [row for section in sections for row in self.order(section)]

    def sections(self, bands: list[list[T]]) -> list[list[T]]:
        """Consecutive bands joined as long as they share a gutter.

        A heading over two columns bridges the gutter and stays a section of its own;
        the lines of the columns below it share the gutter and become one section,
        which is then cut into columns.
        """
        out = [list(bands[0])]
        for band in bands[1:]:
            joined = [*out[-1], *band]
            if len(self.split(joined, 0, COLUMN_GAP * self.unit)) > 1:
                out[-1] = joined
            else:
                out.append(list(band))
        return out

    def tables(self, columns: list[list[T]]) -> list[list[T]]:
        """Columns side by side, neighbours that together look like a table joined."""
        groups = [list(columns[0])]
        last = columns[0]
        for column in columns[1:]:
            pair = [last, column]
            if self.table_like(pair, self.split([*last, *column], 1, 0.0)):
                groups[-1].extend(column)
            else:
                groups.append(list(column))
            last = column
        return groups

    def table_like(self, columns: list[list[T]], bands: list[list[T]]) -> bool:
        column_of = {id(item): n for n, column in enumerate(columns) for item in column}
        spanning = [b for b in bands if len({column_of[id(item)] for item in b}) > 1]
        if len(spanning) < 2 or len(spanning) * 2 < len(bands):
            return False
        return all(
            statistics.median(self.chars(item) for item in column) <= TABLE_MAX_CHARS
            for column in columns
        )

    def rows(self, items: Sequence[T]) -> list[list[T]]:
        """Items whose boxes overlap in both projections: rows by vertical overlap."""
        rows: list[tuple[Bbox, list[T]]] = []
        for item in sorted(items, key=lambda item: self.bbox(item)[1]):
            box = self.bbox(item)
            if rows:
                top, bottom = rows[-1][0][1], rows[-1][0][3]
                overlap = min(bottom, box[3]) - max(top, box[1])
                if overlap >= 0.5 * (box[3] - box[1]):
                    rows[-1][1].append(item)
                    rows[-1][0][3] = max(bottom, box[3])
                    continue
            rows.append(([box[0], box[1], box[2], box[3]], [item]))
        return [sorted(row, key=lambda item: self.bbox(item)[0]) for _, row in rows]


def reading_order(
    items: Sequence[T], bbox: Callable[[T], Bbox], chars: Callable[[T], float], unit: float
) -> list[list[T]]:
    """``items`` as rows in reading order.

    ``chars`` gives an item's characters per line, ``unit`` is the page's median line height.
    """
    return _Cutter(bbox, chars, max(1.0, unit)).order(items)
