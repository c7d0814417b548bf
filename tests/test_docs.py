"""Every code block in README.md and docs/ runs as written, outside the repository.

Python blocks run in a fresh directory where only the ``harpia`` package is importable; a
block that defines ``test_*`` functions runs under pytest. Blocks whose functions are all
annotated ("typed" blocks, those without functions included) must also pass
``mypy --strict``. Shell blocks name scripts that
exist and ``python -m harpia`` options that exist (running them is CI's job: ci/test,
ci/demo, benchmarks).

Two markers, an HTML comment on the line right before a block, are the only ways out:

    <!-- continues the previous block -->   the block runs after the file's previous Python
                                            block, in the same program (a tutorial's steps)
    <!-- not runnable: REASON -->           never run; REASON says why (keep these few)
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import harpia

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(harpia.__file__).resolve().parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
CONTINUES = "<!-- continues the previous block -->"
NOT_RUNNABLE = re.compile(r"<!-- not runnable: (?P<reason>.+?) -->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.S | re.M)
#: A marker that skips a block is a debt: this is the most the docs may carry.
MAX_NOT_RUNNABLE = 6


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    marker: str  # "", "continues" or "not runnable: ..."
    program: list[Block] = field(default_factory=list)  # python: the blocks it runs after

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found: list[Block] = []
    for doc in DOCS:
        text = doc.read_text()
        previous_python: Block | None = None
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
            skip = NOT_RUNNABLE.fullmatch(before)
            marker = ("continues" if before == CONTINUES
                      else f"not runnable: {skip['reason']}" if skip else "")
            block = Block(doc, line, match["lang"], match["body"], marker)
            if block.lang == "python" and not block.marker.startswith("not runnable"):
                if marker == "continues":
                    assert previous_python is not None, f"{block.name}: nothing to continue"
                    block.program = [*previous_python.program, previous_python]
                previous_python = block
            found.append(block)
    return found


BLOCKS = blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python" and not b.marker.startswith("not runnable")]
SHELL = [b for b in BLOCKS if b.lang in ("sh", "bash", "shell") and not b.marker]


def source(block: Block) -> str:
    return "\n".join(b.code for b in [*block.program, block])


def is_typed(code: str) -> bool:
    """Every function annotated (a block without functions counts: its calls are checked)."""
    functions = [n for n in ast.walk(ast.parse(code))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return all(
        f.returns is not None and all(a.annotation is not None or a.arg in ("self", "cls")
                                      for a in [*f.args.posonlyargs, *f.args.args,
                                                *f.args.kwonlyargs])
        for f in functions)


@pytest.fixture(scope="module")
def only_harpia(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that holds nothing but a link to the harpia package under test."""
    directory = tmp_path_factory.mktemp("only-harpia")
    (directory / "harpia").symlink_to(PACKAGE, target_is_directory=True)
    return directory


def module_name(block: Block) -> str:
    return "test_doc_" + re.sub(r"\W", "_", block.name.removesuffix(".md").lower())


def test_the_docs_have_code_blocks_and_few_skips() -> None:
    assert len(PYTHON) >= 10 and SHELL
    skipped = [f"{b.name}: {b.marker}" for b in BLOCKS if b.marker.startswith("not runnable")]
    assert len(skipped) <= MAX_NOT_RUNNABLE, "\n".join(skipped)


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.name)
def test_python_block_runs(block: Block, only_harpia: Path, tmp_path: Path) -> None:
    code = source(block)
    path = tmp_path / f"{module_name(block)}.py"
    path.write_text(code)
    # Imported, not run as __main__: a server in a block sits under `if __name__ ==
    # "__main__":`, so running it defines the app without serving forever.
    if re.search(r"^(async )?def test_", code, re.M):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
    else:
        command = [sys.executable, "-c",
                   "import runpy, sys; runpy.run_path(sys.argv[1], run_name='doc_example')",
                   str(path)]
    env = dict(os.environ, PYTHONPATH=str(only_harpia))
    try:
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.name} did not finish in 120 s (does it serve outside "
                    f"`if __name__ == \"__main__\":`?)")
    assert result.returncode == 0, f"{block.name}:\n{code}\n{result.stdout}\n{result.stderr}"


def test_typed_python_blocks_pass_mypy_strict(only_harpia: Path, tmp_path: Path) -> None:
    typed = [b for b in PYTHON if is_typed(source(b))]
    assert typed, "no typed block found"
    paths = []
    for block in typed:
        path = tmp_path / f"{module_name(block)}.py"
        path.write_text(source(block))
        paths.append(str(path))
    env = dict(os.environ, MYPYPATH=str(only_harpia))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
         "--python-version", "3.11", *paths],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def cli_options() -> set[str]:
    result = subprocess.run([sys.executable, "-m", "harpia", "--help"], capture_output=True,
                            text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(PACKAGE.parent)))
    return set(re.findall(r"--[\w-]+", result.stdout))


@pytest.mark.parametrize("block", SHELL, ids=lambda b: b.name)
def test_shell_block_names_what_exists(block: Block) -> None:
    lines = [ln.split("#", 1)[0].strip() for ln in block.code.replace("\\\n", " ").splitlines()]
    for line in filter(None, lines):
        for command in re.split(r"&&|\|\||;", line):
            words = shlex.split(command)
            if words[:3] == ["python", "-m", "harpia"]:
                unknown = {w.split("=")[0] for w in words if w.startswith("--")} - cli_options()
                assert not unknown, f"{block.name}: python -m harpia has no {unknown}"
            scripts = [w for w in words if "/" in w and not w.startswith((".venv", "http"))
                       and not w.startswith("-")]
            for script in scripts:
                assert (ROOT / script).exists(), f"{block.name}: no {script} in the repo"
