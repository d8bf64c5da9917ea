"""The generated blocks of README.md and docs/*.md are what their commands print from benchmarks/results/*.json
(benchmarks/docs.py, issue 32 item 5), and the check names a stale block and its file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT, load_benchmark


def test_every_generated_block_is_its_commands_output():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "docs.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"python benchmarks/docs.py rewrites them:\n{done.stderr}"


def write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_stale_block_is_named_with_its_file_and_rewritten(tmp_path):
    docs = load_benchmark("docs")
    blocks = {("README.md", "one"): ("-c", "print('\\nfresh\\n')"),
              ("docs/page.md", "two"): ("-c", "print('| a |')")}
    write(tmp_path, "README.md", "# x\n<!-- one:start -->\nold\n<!-- one:end -->\ntail\n")
    page = write(tmp_path, "docs/page.md", "`<!-- two:start -->` in prose is not a marker\n"
                                           "<!-- two:start -->\n| a |\n<!-- two:end -->\n")
    stale = docs.regenerate(True, root=tmp_path, blocks=blocks)
    assert len(stale) == 1 and stale[0].startswith("README.md: block 'one' is stale"), stale
    assert "old" in (tmp_path / "README.md").read_text()  # the check writes nothing
    assert docs.regenerate(False, root=tmp_path, blocks=blocks) == ["README.md: rewrote one"]
    assert (tmp_path / "README.md").read_text() == "# x\n<!-- one:start -->\nfresh\n<!-- one:end -->\ntail\n"
    assert docs.regenerate(True, root=tmp_path, blocks=blocks) == []
    assert page.read_text().count("| a |") == 1


@pytest.mark.parametrize("text, message", [
    ("<!-- other:start -->\nx\n<!-- other:end -->\n", "block 'other' has no command"),
    ("no markers\n", "block 'one' is registered but has no"),
    ("<!-- one:end -->\n<!-- one:start -->\n", "needs <!-- one:start --> before <!-- one:end -->"),
])
def test_markers_and_the_registry_must_agree(tmp_path, text, message):
    docs = load_benchmark("docs")
    write(tmp_path, "README.md", text)
    with pytest.raises(docs.DocsError, match=message):
        docs.regenerate(True, root=tmp_path, blocks={("README.md", "one"): ("-c", "print(1)")})


def test_a_failing_command_is_an_error_not_a_stale_block(tmp_path):
    docs = load_benchmark("docs")
    write(tmp_path, "README.md", "<!-- one:start -->\n<!-- one:end -->\n")
    with pytest.raises(docs.DocsError, match="exited 3"):
        docs.regenerate(True, root=tmp_path, blocks={("README.md", "one"): ("-c", "raise SystemExit(3)")})
