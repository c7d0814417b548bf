"""Check and summarise an Autobahn|Testsuite fuzzingclient report (reports/servers/index.json).

Used by ci/autobahn/run after wstest has finished, and by tests/autobahn/test_autobahn.py.

    python3 ci/autobahn/report.py [--index PATH] [--wstest-log PATH] [--summary PATH]
                                  [--docs PATH] [--agent NAME] ...

Exit status: 0 if every case is as expected (see EXPECTED_NON_OK), 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import html
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_INDEX = HERE / "reports" / "servers" / "index.json"
DEFAULT_WSTEST_LOG = HERE / "reports" / "wstest.log"
DEFAULT_SUMMARY = HERE / "reports" / "summary.md"
REGENERATE_COMMAND = "ci/autobahn/run --write-docs"

# ---------------------------------------------------------------------------------------------
# The only cases allowed to be anything but OK, with the (behavior, behaviorClose) they must
# have instead. Everything else must be ("OK", "OK").
#
# These three are INFORMATIONAL for every server: the cases record what the server did and set
# both behavior and behaviorClose to INFORMATIONAL whatever happened (RFC 6455 leaves it open).
#   7.1.6    a 256 KiB text message, a close and a ping sent back to back: whether the message
#            comes back before the close depends on the implementation.
#   7.13.1   close with code 5000    (outside every range RFC 6455 defines; the suite says
#   7.13.2   close with code 65535    "actual events are undefined by the spec")
# ---------------------------------------------------------------------------------------------
EXPECTED_NON_OK: dict[str, tuple[str, str]] = {
    "7.1.6": ("INFORMATIONAL", "INFORMATIONAL"),
    "7.13.1": ("INFORMATIONAL", "INFORMATIONAL"),
    "7.13.2": ("INFORMATIONAL", "INFORMATIONAL"),
}

BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")

# Section titles as the suite names them (autobahntestsuite/caseset.py).
SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "Compression (different payloads)",
    "13": "Compression (different parameters)",
}


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    behavior: str
    behavior_close: str
    duration_ms: int
    remote_close_code: int | None
    reportfile: str


@dataclass(frozen=True)
class WstestRun:
    """What wstest announced on stdout before running."""

    announced: int | None
    cases: tuple[str, ...] | None
    version: str | None


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def expected(case_id: str) -> tuple[str, str]:
    """The (behavior, behaviorClose) a conforming server must get for this case."""
    return EXPECTED_NON_OK.get(case_id, ("OK", "OK"))


def load_index(index: Path, agent: str | None = None) -> tuple[str, dict[str, CaseResult]]:
    """Read index.json; return (agent, results by case id). agent=None: the only agent in it."""
    data: dict[str, dict[str, dict[str, Any]]] = json.loads(index.read_text())
    if agent is None:
        if len(data) != 1:
            raise ValueError(f"{index}: expected one agent, found {sorted(data)}; pass the agent")
        agent = next(iter(data))
    if agent not in data:
        raise ValueError(f"{index}: no results for agent {agent!r} (found {sorted(data)})")
    results = {
        case_id: CaseResult(
            case_id=case_id,
            behavior=row["behavior"],
            behavior_close=row["behaviorClose"],
            duration_ms=int(row.get("duration", 0)),
            remote_close_code=row.get("remoteCloseCode"),
            reportfile=row.get("reportfile", ""),
        )
        for case_id, row in data[agent].items()
    }
    return agent, dict(sorted(results.items(), key=lambda kv: case_key(kv[0])))


def parse_wstest_output(text: str) -> WstestRun:
    """Find "Ok, will run N test cases", the "Cases = [...]" list and the suite version."""
    m = re.search(r"Ok, will run (\d+) test cases", text)
    announced = int(m.group(1)) if m else None
    cases: tuple[str, ...] | None = None
    m = re.search(r"^Cases = (\[.*\])\s*$", text, re.MULTILINE)
    if m:
        try:
            cases = tuple(str(c) for c in ast.literal_eval(m.group(1)))
        except (ValueError, SyntaxError):
            cases = None
    m = re.search(r"Autobahn Testsuite Version ([^ ]+) / Autobahn Version ([^ )]+)", text)
    version = f"autobahntestsuite {m.group(1)}, autobahn {m.group(2)}" if m else None
    return WstestRun(announced, cases, version)


def case_details(index: Path, result: CaseResult) -> dict[str, Any]:
    """The per-case report (description, expectation, result, ...), or {} if unreadable."""
    try:
        details: dict[str, Any] = json.loads((index.parent / result.reportfile).read_text())
    except (OSError, ValueError):
        return {}
    return details


def plain_text(text: str) -> str:
    """Case descriptions are HTML snippets: strip tags and collapse whitespace."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return " ".join(text.split())


def check(results: dict[str, CaseResult], run: WstestRun | None) -> list[str]:
    """Every problem found: missing cases (the server died mid-run) and unexpected outcomes."""
    problems: list[str] = []
    if not results:
        problems.append("the report has no cases")
    if run is not None:
        if run.announced is None:
            problems.append("wstest output has no 'Ok, will run N test cases' line")
        elif run.announced != len(results):
            problems.append(
                f"wstest announced {run.announced} cases but the report has {len(results)}: "
                "the server probably died or stopped answering during the run"
            )
        if run.cases is not None:
            missing = sorted(set(run.cases) - set(results), key=case_key)
            if missing:
                shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
                problems.append(f"{len(missing)} announced cases have no result: {shown}")
    unexpected = [r.case_id for r in results.values()
                  if (r.behavior, r.behavior_close) != expected(r.case_id)]
    if unexpected:
        problems.append(f"{len(unexpected)} cases are not as expected: {', '.join(unexpected)}")
    return problems


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def section_table(results: dict[str, CaseResult]) -> list[str]:
    per_section: dict[str, Counter[str]] = {}
    for r in results.values():
        per_section.setdefault(r.case_id.split(".")[0], Counter())[r.behavior] += 1
    total: Counter[str] = Counter(r.behavior for r in results.values())
    rows = []
    for section in sorted(per_section, key=int):
        counts = per_section[section]
        name = SECTIONS.get(section, "")
        rows.append(
            [f"{section} {name}".strip(), str(sum(counts.values()))]
            + [str(counts[b]) if counts[b] else "" for b in BEHAVIORS]
        )
    rows.append(["**total**", str(len(results))] + [str(total[b]) for b in BEHAVIORS])
    return _table(["Section", "Cases", *BEHAVIORS], rows)


def non_ok_table(results: dict[str, CaseResult]) -> list[str]:
    rows = []
    for r in results.values():
        if r.behavior == "OK" and r.behavior_close == "OK":
            continue
        verdict = "expected" if (r.behavior, r.behavior_close) == expected(r.case_id) else "**no**"
        code = "" if r.remote_close_code is None else str(r.remote_close_code)
        rows.append([r.case_id, r.behavior, r.behavior_close, code, verdict])
    if not rows:
        return ["Every case is OK."]
    return _table(["Case", "Behavior", "Close behavior", "Close code", "Allowed"], rows, "lllrl")


def durations_table(index: Path, results: dict[str, CaseResult]) -> list[str]:
    rows = []
    for r in results.values():
        if not r.case_id.startswith("9."):
            continue
        desc = plain_text(str(case_details(index, r).get("description", "")))
        rows.append([r.case_id, desc, str(r.duration_ms)])
    if not rows:
        return ["Section 9 was not run."]
    return _table(["Case", "Description", "Duration (ms)"], rows, "llr")


def summary_markdown(
    index: Path,
    agent: str,
    results: dict[str, CaseResult],
    run: WstestRun | None,
    problems: list[str],
    title: str = "Autobahn|Testsuite summary",
) -> str:
    verdict = "PASS" if not problems else "FAIL"
    lines = [f"## {title}: {verdict}", ""]
    facts = [f"agent `{agent}`", f"{len(results)} cases in the report"]
    if run is not None and run.announced is not None:
        facts.append(f"{run.announced} announced by wstest")
    if run is not None and run.version:
        facts.append(run.version)
    lines += ["; ".join(facts) + ".", ""]
    lines += ["### Behavior per section", ""] + section_table(results) + [""]
    lines += ["### Cases that are not OK", ""] + non_ok_table(results) + [""]
    if problems:
        lines += ["### Problems", ""] + [f"- {p}" for p in problems] + [""]
    lines += ["### Section 9 durations (measured by the client)", ""]
    lines += durations_table(index, results) + [""]
    return "\n".join(lines)


def docs_markdown(summary: str, server_cmd: str | None, spec: dict[str, Any] | None,
                  commit: str | None) -> str:
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    cases = ", ".join(spec.get("cases", [])) if spec else "*"
    excluded = ", ".join(spec.get("exclude-cases", [])) if spec else ""
    run = [
        f"- date (UTC): {today}" + (f", commit `{commit}`" if commit else ""),
        f"- server: `{server_cmd}`" if server_cmd else "",
        f"- cases: `{cases}`" + (f", excluded: `{excluded}`" if excluded else ""),
        "- client: `wstest -m fuzzingclient` (Python 2.7, installed by `ci/autobahn/install-wstest`)",
    ]
    body = summary.replace("## ", "### ", 1).replace("\n### ", "\n#### ")
    return "\n".join(
        [
            "# WebSocket conformance (Autobahn|Testsuite)",
            "",
            "harpia is tested with the [Autobahn|Testsuite](https://github.com/crossbario/autobahn-testsuite)"
            " fuzzing client against a small echo server (`ci/autobahn/echo_server.py`).",
            "Every case must be OK except 7.1.6, 7.13.1 and 7.13.2, which are INFORMATIONAL for"
            " every server. The allow-list lives in `ci/autobahn/report.py` (`EXPECTED_NON_OK`).",
            "",
            "Regenerate this page with:",
            "",
            "```sh",
            REGENERATE_COMMAND,
            "```",
            "",
            "## Last run",
            "",
            *[line for line in run if line],
            "",
            body.rstrip(),
            "",
            "The section 9 durations are measured by the Python 2 client and vary by about 20%"
            " between runs and servers: they catch gross regressions (quadratic reassembly shows"
            " in 9.3.1 and 9.4.1), they do not rank fast servers.",
            "",
        ]
    )


#: Where the client's section of the docs page starts; everything after it belongs to
#: `ci/autobahn/run --client --write-docs`, everything before it to the server run.
CLIENT_MARKER = "<!-- client conformance: generated by ci/autobahn/run --client --write-docs -->"


def client_docs_markdown(summary: str, spec: dict[str, Any] | None, commit: str | None) -> str:
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    cases = ", ".join(spec.get("cases", [])) if spec else "*"
    excluded = ", ".join(spec.get("exclude-cases", [])) if spec else ""
    body = summary.replace("## ", "### ", 1).replace("\n### ", "\n#### ")
    return "\n".join([
        CLIENT_MARKER,
        "## The client (`harpia.connect`)",
        "",
        "The other half of the suite: `wstest -m fuzzingserver` plays the server and harpia's"
        " client connects to it as the agent (`ci/autobahn/client_agent.py`), echoing every"
        " message from its `message` handler and offering permessage-deflate on every"
        " connection. The same allow-list applies. Regenerate with `ci/autobahn/run --client"
        " --write-docs`.",
        "",
        f"- date (UTC): {today}" + (f", commit `{commit}`" if commit else ""),
        f"- cases: `{cases}`" + (f", excluded: `{excluded}`" if excluded else ""),
        "",
        body.rstrip(),
        "",
        "Section 9 durations here are the fuzzing server's clock around harpia's client.",
        "",
    ])


def write_docs(path: Path, server_part: str | None = None, client_part: str | None = None) -> None:
    """Replace one part of the conformance page, keeping the other."""
    old = path.read_text() if path.exists() else ""
    old_server, marker, old_client = old.partition(CLIENT_MARKER)
    server_text = server_part if server_part is not None else old_server
    client_text = client_part if client_part is not None else (marker + old_client)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(server_text.rstrip() + "\n\n" + client_text if client_text.strip()
                    else server_text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check an Autobahn|Testsuite report.")
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX)
    parser.add_argument("--agent", default=None, help="agent name in index.json (default: the only one)")
    parser.add_argument("--wstest-log", type=Path, default=None,
                        help="wstest's output, for the announced case count")
    parser.add_argument("--summary", type=Path, default=DEFAULT_SUMMARY,
                        help="write the markdown summary here")
    parser.add_argument("--docs", type=Path, default=None, help="also write the docs page here")
    parser.add_argument("--server-cmd", default=None, help="server command, for the docs page")
    parser.add_argument("--spec", type=Path, default=None, help="spec used, for the docs page")
    parser.add_argument("--commit", default=None, help="git commit tested, for the docs page")
    parser.add_argument("--quiet", action="store_true", help="do not print the summary")
    parser.add_argument("--client", action="store_true",
                        help="a fuzzingserver report (harpia's client): --docs writes the"
                             " client section of the page")
    args = parser.parse_args(argv)

    if not args.index.exists():
        print(f"report: {args.index} does not exist (did wstest run?)", file=sys.stderr)
        return 1
    try:
        agent, results = load_index(args.index, args.agent)
    except (ValueError, KeyError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    run = None
    if args.wstest_log is not None:
        text = args.wstest_log.read_text(errors="replace") if args.wstest_log.exists() else ""
        run = parse_wstest_output(text)
    problems = check(results, run)
    title = "Autobahn|Testsuite (fuzzingserver) summary" if args.client else \
        "Autobahn|Testsuite summary"
    summary = summary_markdown(args.index, agent, results, run, problems, title)

    if not args.quiet:
        print(summary)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(summary)
    if args.docs is not None:
        spec = json.loads(args.spec.read_text()) if args.spec else None
        if args.client:
            write_docs(args.docs, client_part=client_docs_markdown(summary, spec, args.commit))
        else:
            write_docs(args.docs, server_part=docs_markdown(summary, args.server_cmd, spec,
                                                            args.commit))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
