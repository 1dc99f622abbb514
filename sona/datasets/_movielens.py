"""MovieLens loaders, one entry point for every layout GroupLens ships.

* ml-100k: GroupLens' ``u.data`` + ``u.item``, or RecBole's atomic files
  (``*.inter``, ``*.item``, optional ``*.kg`` + ``*.link``; RecBole redistributes
  ml-100k with a Freebase knowledge graph);
* ml-1m / ml-10m: ``::``-separated ``ratings.dat`` + ``movies.dat`` (ml-10m adds
  ``tags.dat``);
* ml-latest, ml-latest-small, ml-20m, ml-25m, ml-32m: ``ratings.csv`` +
  ``movies.csv``, optional ``tags.csv``.

Rated titles count as fully watched (completion 1.0), since MovieLens records
ratings, not viewing. Ratings keep their five-star scale, half stars included;
free-text tags become the titles' ``metadata["tags"]``, a content feature.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from sona.catalog import Catalog, ContentItem
from sona.errors import DatasetFormatError, ValidationError
from sona.events import RATING_MAX, validate_events

__all__ = ["DatasetWarning", "load_movielens"]


class DatasetWarning(UserWarning):
    """A dataset loaded, but some of its rows were skipped (the message says which and why)."""


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


def _encoding(file: Path) -> str:
    """UTF-8 when the file decodes as such, else Latin-1 (ml-100k and ml-1m are Latin-1)."""
    try:
        file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _read_table(
    file: Path,
    *,
    sep: str,
    names: list[str] | None,
    header: int | None,
    encoding: str = "utf-8",
    expected: int | None = None,
    quoted: bool = False,
    free: int | None = None,
) -> pd.DataFrame:
    """Read a delimited file, rejecting ragged lines with the line number.

    ``sep`` of more than one character (``::``) splits plainly; ``quoted`` reads
    CSV quoting (``"Matrix, The (1999)"``). Column ``free`` holds free text that
    may itself contain a multi-character ``sep``: surplus fields are joined back into it.
    """
    with open(file, encoding=encoding, newline="") as fh:
        if len(sep) == 1:
            quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
            rows = list(csv.reader(fh, delimiter=sep, quoting=quoting))
        else:
            rows = [line.rstrip("\r\n").split(sep) for line in fh]
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
        if free is not None and len(r) > width and len(sep) > 1:
            extra = len(r) - width
            r[free : free + extra + 1] = [sep.join(r[free : free + extra + 1])]
        if len(r) != width:
            raise DatasetFormatError(str(file), f"expected {width} fields, got {len(r)}", line=i + start)
    return pd.DataFrame(rows, columns=cols if names is None else names)


_RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def _locate_bad_line(file: Path, sep: str, columns: list[int], width: int, header: bool) -> None:
    """Stream ``file`` and raise at its first malformed line (the fast reader only knows *that* one is)."""
    with open(file, encoding="latin-1", newline="") as fh:
        rows: Iterator[list[str]] = (
            csv.reader(fh) if sep == "," else (line.rstrip("\r\n").split(sep) for line in fh)
        )
        for n, r in enumerate(rows, start=1):
            if header and n == 1:
                continue
            if len(r) != width:
                raise DatasetFormatError(str(file), f"expected {width} fields, got {len(r)}", line=n)
            for name, j in zip(_RATING_COLUMNS, columns, strict=True):
                try:
                    v = float(r[j])
                except ValueError:
                    v = np.nan
                if not np.isfinite(v) or (name != "rating" and not v.is_integer()):
                    what = "numeric" if name == "rating" else "an integer"
                    raise DatasetFormatError(str(file), f"column {name!r} is not {what}: {r[j]!r}", line=n)


def _read_ratings(file: Path, *, sep: Literal[",", "::"]) -> pd.DataFrame:
    """Ratings of any size, numeric columns read by pandas' C parser.

    Millions of rows (ml-25m) would not fit as Python lists, so the fast reader
    parses numbers directly; if anything is off, :func:`_locate_bad_line`
    re-reads the file to name the first bad line, as the small readers do.
    Returns ``user_id``/``item_id`` as strings, ``rating`` and ``timestamp`` as floats.
    """
    header = sep == ","
    columns, width = [0, 1, 2, 3], 4
    try:
        if header:
            head = pd.read_csv(file, nrows=0).columns.tolist()
            want = ["userId", "movieId", "rating", "timestamp"]
            if missing := [c for c in want if c not in head]:
                raise DatasetFormatError(str(file), f"missing column {missing[0]!r}")
            columns, width = [head.index(c) for c in want], len(head)
            raw = pd.read_csv(file, dtype=np.float64, skip_blank_lines=False)
            ok = raw.shape[1] == width
            df = raw.iloc[:, columns]
        else:  # "a::b::c::d" split on ":" gives 7 fields, the odd ones empty
            raw = pd.read_csv(file, sep=":", header=None, dtype=np.float64, skip_blank_lines=False)
            ok = raw.shape[1] == 7 and bool(raw[[1, 3, 5]].isna().all().all())
            df = raw[[0, 2, 4, 6]] if ok else raw
        df = df.set_axis(list(_RATING_COLUMNS), axis=1) if ok else df
        values = df.to_numpy()
        ok = ok and bool(np.isfinite(values).all()) and bool((values[:, [0, 1, 3]] % 1 == 0).all())
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        _locate_bad_line(file, sep, columns, width, header)
        raise DatasetFormatError(str(file), f"cannot be parsed: {exc}") from exc
    if not ok:
        _locate_bad_line(file, sep, columns, width, header)
        raise DatasetFormatError(str(file), "cannot be parsed")
    return pd.DataFrame(
        {
            "user_id": df["user_id"].astype(np.int64).astype(str),
            "item_id": df["item_id"].astype(np.int64).astype(str),
            "rating": df["rating"],
            "timestamp": df["timestamp"],
        }
    )


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
    bad = ~((ratings > 0) & (ratings <= RATING_MAX))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetFormatError(
            str(file),
            f"rating {float(ratings.iloc[i]):g} outside (0, {RATING_MAX:g}]",
            line=i + 1 + header_lines,
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
    return _finish(items, events, inter, 1)


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
    return _finish(items, events, data, 0)


_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")
_NO_GENRES = "(no genres listed)"


def _title_year(raw: str) -> tuple[str, int | None]:
    """``"Heat (1995)"`` -> ``("Heat", 1995)``; a series' ``(2006-2007)`` gives its first year."""
    m = _YEAR.match(raw)
    if m and m["title"] and 1800 <= int(m["year"]) <= 2200:
        return m["title"], int(m["year"])
    return raw.strip(), None


def _tags(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each title's distinct tags, lower-cased, most often applied first."""
    t = pd.DataFrame(
        {
            "item": frame["movieId"].astype(str).str.strip(),
            "tag": frame["tag"].astype(str).str.strip().str.lower().str.split().str.join(" "),
        }
    )
    t = t[t["tag"] != ""]
    counts = t.groupby(["item", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["item", "n", "tag"], ascending=[True, False, True], kind="stable")
    return counts.groupby("item")["tag"].agg(list).to_dict()


def _grouplens_modern(path: Path, kind: Literal["csv", "dat"]) -> tuple[Catalog, pd.DataFrame]:
    """ml-1m/ml-10m (``::``-separated ``.dat``) and ml-latest/-20m/-25m (``.csv``)."""
    ratings, movies, tags = (path / f"{name}.{kind}" for name in ("ratings", "movies", "tags"))
    if not movies.exists():
        raise DatasetFormatError(str(movies), "file not found")
    sep: Literal[",", "::"] = "," if kind == "csv" else "::"
    r = _read_ratings(ratings, sep=sep)
    header = 1 if kind == "csv" else 0
    events = _events(r["user_id"], r["item_id"], r["rating"], r["timestamp"], ratings, header)
    names = ["movieId", "title", "genres"]
    if kind == "csv":
        mv = _read_table(movies, sep=",", names=None, header=0, quoted=True)
        if missing := [c for c in names if c not in mv.columns]:
            raise DatasetFormatError(str(movies), f"missing column {missing[0]!r}")
    else:
        mv = _read_table(movies, sep="::", names=names, header=None, encoding=_encoding(movies), free=1)
    tagged: dict[str, list[str]] = {}
    if tags.exists():
        tag_names = ["userId", "movieId", "tag", "timestamp"]
        tg = (
            _read_table(tags, sep=",", names=None, header=0, quoted=True)
            if kind == "csv"
            else _read_table(tags, sep="::", names=tag_names, header=None, encoding=_encoding(tags), free=2)
        )
        if "movieId" not in tg.columns or "tag" not in tg.columns:
            raise DatasetFormatError(str(tags), "missing column 'movieId' or 'tag'")
        tagged = _tags(tg)
    items = []
    for rec in mv.to_dict("records"):
        cid = str(rec["movieId"]).strip()
        title, year = _title_year(str(rec["title"]))
        items.append(
            ContentItem(
                content_id=cid,
                title=title,
                release_year=year,
                genres=tuple(g for g in str(rec["genres"]).split("|") if g and g != _NO_GENRES),
                metadata={"tags": tagged[cid]} if cid in tagged else {},
            )
        )
    return _finish(items, events, ratings, header)


def _finish(
    items: list[ContentItem], events: pd.DataFrame, file: Path, header_lines: int
) -> tuple[Catalog, pd.DataFrame]:
    """Drop ratings of titles the item file lacks (with a warning naming the line), set popularity."""
    known = set(it.content_id for it in items)
    unknown = ~events["content_id"].isin(known).to_numpy()
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        warnings.warn(
            f"{file}:{first + 1 + header_lines}: dropped {int(unknown.sum())} rating(s) of titles "
            f"missing from the item file, e.g. {events['content_id'].iloc[first]!r}",
            DatasetWarning,
            stacklevel=4,  # the caller of load_movielens
        )
        events = events[~unknown]
    pop = events["content_id"].value_counts()
    catalog = Catalog(dataclasses.replace(i, popularity=float(pop.get(i.content_id, 0))) for i in items)
    events = events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return catalog, events


def load_movielens(path: str | Path) -> tuple[Catalog, pd.DataFrame]:
    """Load any MovieLens release from its directory, as GroupLens ships it.

    The layout is recognised by its files: ``u.data`` + ``u.item`` (ml-100k),
    RecBole's ``*.inter`` + ``*.item`` (+ ``*.kg``/``*.link``), ``ratings.dat`` +
    ``movies.dat`` (+ ``tags.dat``; ml-1m, ml-10m) or ``ratings.csv`` +
    ``movies.csv`` (+ ``tags.csv``; ml-latest, ml-latest-small, ml-20m, ml-25m).

    Parameters
    ----------
    path
        The unpacked dataset directory.

    Returns
    -------
    (Catalog, events)
        Events have the columns of :data:`sona.events.EVENT_COLUMNS`; ids are
        strings, ``completion_rate`` is 1.0 and ``rating`` the given rating on
        its own five-star scale, half stars (0.5-5) included: engagement reads
        4+ as liked and 2- as disliked, which holds on every MovieLens release.
        Data on another scale is mapped onto five stars before it becomes
        events (``rating * 5 / max``; see :data:`sona.events.RATING_MAX`).
        Titles lose the trailing ``(year)``, which becomes ``release_year``;
        ``(no genres listed)`` means no genres. Free-text tags, lower-cased and
        most frequent first, go to ``metadata["tags"]``, which
        :func:`sona.features.content_features` turns into content features.
        Tags are item-level and read as shipped (all users, all times).

    Raises
    ------
    DatasetFormatError
        A file is missing, a rating is outside (0, 5], or a line is malformed;
        the error names file and line.

    Warns
    -----
    DatasetWarning
        Ratings of titles missing from the item file are dropped, since no
        model can place them; the warning names the first such line and the count.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DatasetFormatError(str(p), "not a directory")
    if (p / "u.data").exists():
        return _grouplens(p)
    if (p / "ratings.csv").exists():
        return _grouplens_modern(p, "csv")
    if (p / "ratings.dat").exists():
        return _grouplens_modern(p, "dat")
    if any(p.glob("*.inter")):
        return _recbole(p)
    raise DatasetFormatError(
        str(p), "found none of u.data/u.item, ratings.csv/movies.csv, ratings.dat/movies.dat, *.inter/*.item"
    )
