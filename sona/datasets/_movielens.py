"""MovieLens-100k loader.

Reads either GroupLens' original files (``u.data``, ``u.item``) or RecBole's
atomic files (``*.inter``, ``*.item``, optional ``*.kg`` + ``*.link``). The data
comes from GroupLens (https://grouplens.org/datasets/movielens/100k/); RecBole
redistributes it with a Freebase knowledge graph. Rated titles count as fully
watched (completion 1.0), since MovieLens records ratings, not viewing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from sona.catalog import Catalog, ContentItem
from sona.errors import DatasetFormatError, ValidationError
from sona.events import validate_events

__all__ = ["load_movielens"]

_GENRES_GROUPLENS = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# Only relations that name people; genres/languages/awards would blur the "people" signal.
_PEOPLE_RELATIONS = frozenset(
    {
        "film.film.actor",
        "film.film.directed_by",
        "film.film.produced_by",
        "film.film.written_by",
        "film.film.music",
        "film.film.cinematography",
        "film.film.edited_by",
        "film.film.story_by",
    }
)


def _one(path: Path, pattern: str, *, required: bool = True) -> Path | None:
    found = sorted(path.glob(pattern))
    if not found:
        if required:
            raise DatasetFormatError(str(path), f"no file matching {pattern!r}")
        return None
    return found[0]


def _read_table(
    file: Path,
    *,
    sep: str,
    names: list[str] | None,
    header: int | None,
    encoding: str = "utf-8",
    expected: int | None = None,
) -> pd.DataFrame:
    """Read a delimited file, rejecting ragged lines with the line number."""
    with open(file, encoding=encoding, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=sep, quoting=csv.QUOTE_NONE))
    if header is not None:
        if not rows:
            raise DatasetFormatError(str(file), "file is empty")
        cols = rows[0]
        rows = rows[1:]
        start = 2
    else:
        cols = names or []
        start = 1
    width = expected or len(cols)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DatasetFormatError(str(file), f"expected {width} fields, got {len(r)}", line=i + start)
    return pd.DataFrame(rows, columns=cols if names is None else names)


def _to_num(df: pd.DataFrame, col: str, file: Path, header_lines: int) -> pd.Series:
    out = pd.to_numeric(df[col], errors="coerce")
    bad = out.isna() & df[col].astype(str).str.strip().ne("")
    if bad.any() or out.isna().any():
        i = int(np.flatnonzero((bad | out.isna()).to_numpy())[0])
        raise DatasetFormatError(
            str(file), f"column {col!r} is not numeric: {df[col].iloc[i]!r}", line=i + 1 + header_lines
        )
    return out


def _events(
    users: pd.Series, items: pd.Series, ratings: pd.Series, ts: pd.Series, file: Path, header_lines: int
) -> pd.DataFrame:
    bad = ~ratings.between(1, 5)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetFormatError(
            str(file), f"rating {ratings.iloc[i]} outside [1, 5]", line=i + 1 + header_lines
        )
    frame = pd.DataFrame(
        {
            "user_id": users.astype(str).str.strip(),
            "content_id": items.astype(str).str.strip(),
            "timestamp": ts.astype(float),
            "completion_rate": 1.0,
            "rating": ratings.astype(float),
            "dismissed": False,
            "source": "movielens",
        }
    )
    try:
        out = validate_events(frame)
    except ValidationError as exc:
        raise DatasetFormatError(str(file), str(exc)) from exc
    return out


def _people(path: Path) -> dict[str, list[str]]:
    kg, link = _one(path, "*.kg", required=False), _one(path, "*.link", required=False)
    if kg is None or link is None:
        return {}
    lk = _read_table(link, sep="\t", names=None, header=0)
    lk.columns = [c.split(":")[0] for c in lk.columns]
    g = _read_table(kg, sep="\t", names=None, header=0)
    g.columns = [c.split(":")[0] for c in g.columns]
    g = g[g["relation_id"].isin(_PEOPLE_RELATIONS)]
    ent2item = dict(zip(lk["entity_id"], lk["item_id"], strict=True))
    g = g.assign(item=g["head_id"].map(ent2item)).dropna(subset=["item"])
    return g.groupby("item")["tail_id"].apply(lambda s: sorted(set(s))).to_dict()


def _recbole(path: Path) -> tuple[Catalog, pd.DataFrame]:
    inter = _one(path, "*.inter")
    item = _one(path, "*.item")
    assert inter is not None and item is not None
    df = _read_table(inter, sep="\t", names=None, header=0)
    df.columns = [c.split(":")[0] for c in df.columns]
    for col in ("user_id", "item_id", "rating", "timestamp"):
        if col not in df.columns:
            raise DatasetFormatError(str(inter), f"missing column {col!r}")
    events = _events(
        df["user_id"],
        df["item_id"],
        _to_num(df, "rating", inter, 1),
        _to_num(df, "timestamp", inter, 1),
        inter,
        1,
    )
    it = _read_table(item, sep="\t", names=None, header=0)
    it.columns = [c.split(":")[0] for c in it.columns]
    people = _people(path)
    genres_col = "class" if "class" in it.columns else "genre"
    items = [
        ContentItem(
            content_id=str(r["item_id"]),
            title=str(r.get("movie_title", "")),
            genres=tuple(str(r.get(genres_col, "")).split()),
            release_year=int(r["release_year"]) if str(r.get("release_year", "")).isdigit() else None,
            people=tuple(people.get(str(r["item_id"]), ())),
        )
        for r in it.to_dict("records")
    ]
    return _finish(items, events)


def _grouplens(path: Path) -> tuple[Catalog, pd.DataFrame]:
    data, item = path / "u.data", path / "u.item"
    for f in (data, item):
        if not f.exists():
            raise DatasetFormatError(str(f), "file not found")
    df = _read_table(data, sep="\t", names=["user_id", "item_id", "rating", "timestamp"], header=None)
    events = _events(
        df["user_id"],
        df["item_id"],
        _to_num(df, "rating", data, 0),
        _to_num(df, "timestamp", data, 0),
        data,
        0,
    )
    cols = ["item_id", "title", "release_date", "video_release", "url", *_GENRES_GROUPLENS]
    it = _read_table(item, sep="|", names=cols, header=None, encoding="latin-1")
    items = []
    for r in it.to_dict("records"):
        title = str(r["title"])
        year = None
        if title.endswith(")") and title[-5:-1].isdigit():
            year, title = int(title[-5:-1]), title[:-7].strip()
        elif str(r["release_date"])[-4:].isdigit():
            year = int(str(r["release_date"])[-4:])
        items.append(
            ContentItem(
                content_id=str(r["item_id"]),
                title=title,
                release_year=year,
                genres=tuple(g for g in _GENRES_GROUPLENS if str(r[g]) == "1" and g != "unknown"),
            )
        )
    return _finish(items, events)


def _finish(items: list[ContentItem], events: pd.DataFrame) -> tuple[Catalog, pd.DataFrame]:
    pop = events["content_id"].value_counts()
    items = [
        ContentItem(
            content_id=i.content_id,
            title=i.title,
            genres=i.genres,
            release_year=i.release_year,
            people=i.people,
            popularity=float(pop.get(i.content_id, 0)),
        )
        for i in items
    ]
    catalog = Catalog(items)
    unknown = catalog.lookup(events["content_id"]) < 0
    if unknown.any():
        raise DatasetFormatError(
            "events",
            f"{int(unknown.sum())} events name titles missing "
            f"from the item file, e.g. {events['content_id'][unknown].iloc[0]!r}",
        )
    events = events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return catalog, events


def load_movielens(path: str | Path) -> tuple[Catalog, pd.DataFrame]:
    """Load MovieLens-100k from ``path``.

    Parameters
    ----------
    path
        A directory holding either ``u.data`` + ``u.item`` or RecBole's
        ``*.inter`` + ``*.item`` (with optional ``*.kg`` + ``*.link``).

    Returns
    -------
    (Catalog, events)
        Events have the columns of :data:`sona.events.EVENT_COLUMNS`; ids are
        strings, ``completion_rate`` is 1.0 and ``rating`` the given rating.

    Raises
    ------
    DatasetFormatError
        A file is missing or a line is malformed; the error names file and line.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DatasetFormatError(str(p), "not a directory")
    if (p / "u.data").exists():
        return _grouplens(p)
    if any(p.glob("*.inter")):
        return _recbole(p)
    raise DatasetFormatError(str(p), "found neither u.data/u.item nor *.inter/*.item")
