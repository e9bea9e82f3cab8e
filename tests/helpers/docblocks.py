"""The code blocks of README.md and docs/*.md, as the documentation tests see them.

The fence convention (docs/development.md, "Documentation is tested"): a block is ```python, ```sh, ```json or
```text. ``text`` blocks are output or listings and never run. Any other block runs in a test unless the line just
before its fence is ``<!-- fragment: why -->`` (a synopsis, an install step, a piece of a larger program).
"""

import glob
import os
import re
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LANGUAGES = ("python", "sh", "json", "text")
FRAGMENT = re.compile(r"^<!-- fragment(:[^>]*)? -->$")


@dataclass(frozen=True)
class Block:
    path: str        # relative to the checkout
    line: int        # of the opening fence, 1-based
    language: str    # what follows the opening ``` ("" for a bare fence)
    code: str
    fragment: bool   # marked as not runnable

    @property
    def where(self):
        return "{}:{}".format(self.path, self.line)


def doc_files():
    return ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def blocks(path):
    """Every fenced block of *path* (relative to the checkout), in order."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j] != "```":
            j += 1
        if j == len(lines):
            raise AssertionError("{}:{}: a code block that is never closed".format(path, start + 1))
        fragment = start > 0 and bool(FRAGMENT.match(lines[start - 1].strip()))
        out.append(Block(path, start + 1, m.group(1), "\n".join(lines[start + 1:j]) + "\n", fragment))
        i = j + 1
    return out


def runnable(block):
    return block.language in ("python", "sh") and not block.fragment
