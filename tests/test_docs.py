"""The user's guide and the lab notes link only to what the repository holds."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def broken_links(md: Path, root: Path = ROOT) -> list[str]:
    """The relative links of a Markdown file whose target is not there (web links are not read)."""
    out = []
    for target in LINK.findall(md.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path = (md.parent / target).resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            out.append(target)
    return out


def test_every_relative_link_in_the_docs_resolves(tmp_path):
    page = tmp_path / "page.md"  # the check itself finds a missing picture and a path out of the tree
    (tmp_path / "there.png").write_bytes(b"")
    page.write_text("![a](there.png) ![b](gone.png) [c](../../elsewhere.md) [d](https://x.org/y) [e](#top)")
    assert broken_links(page, tmp_path) == ["gone.png", "../../elsewhere.md"]
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    assert len(pages) > 50
    broken = {str(p.relative_to(ROOT)): b for p in pages if (b := broken_links(p))}
    assert broken == {}
