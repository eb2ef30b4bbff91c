"""Nothing distil reads is unpickled: checkpoints, caches and stores are safetensors and JSON.

A scan of the package's source for every way Python and its numeric libraries unpickle:
an unpickling reader added anywhere fails here with the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import distil

#: Calls that can execute code from a file: pickle and its wrappers, torch.load without
#: weights_only=True, numpy with allow_pickle, pandas' read_pickle, joblib, dill, marshal.
UNPICKLING = [
    re.compile(r"\bimport (c?pickle|dill|joblib|marshal|shelve)\b"),
    re.compile(r"\bfrom (c?pickle|dill|joblib|marshal|shelve) import\b"),
    re.compile(r"\bpickle\.loads?\("),
    re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"),
    re.compile(r"allow_pickle\s*=\s*True"),
    re.compile(r"\bread_pickle\("),
]


def offending_lines(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if any(pattern.search(line) for pattern in UNPICKLING):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_the_package_never_unpickles():
    assert offending_lines(Path(distil.__file__).parent) == []


def test_the_scan_finds_each_way_of_unpickling(tmp_path):
    """The scan itself can fail: each pattern catches its call, and the safe forms pass."""
    (tmp_path / "bad.py").write_text(
        "import pickle\nfrom joblib import load\nx = pickle.load(f)\n"
        "s = torch.load(path)\ns = torch.load(path, weights_only=False)\n"
        "a = np.load(p, allow_pickle=True)\nd = pd.read_pickle(p)\n"
    )
    (tmp_path / "good.py").write_text(
        "s = torch.load(path, weights_only=True)\na = np.load(p)\nfrom safetensors import safe_open\n"
    )
    assert [line.split(":")[1] for line in offending_lines(tmp_path)] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
    ]
