"""Autobahn|Testsuite results, one test per case.

ci/autobahn/run runs the suite against harpia's echo server and then this module, which reads
ci/autobahn/reports/servers/index.json and checks every case against the expected outcome:
OK for behavior and close behavior, except the INFORMATIONAL allow-list kept in
ci/autobahn/report.py (EXPECTED_NON_OK). Excluded from the default test run (-m 'not autobahn').

    ci/autobahn/run                                            # suite + this test
    python3 -m pytest tests/autobahn -m autobahn -q            # re-check the last report

AUTOBAHN_AGENT selects the agent in index.json when it holds more than one (default: the only one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
AUTOBAHN_DIR = REPO / "ci" / "autobahn"
# ci/autobahn/run --client points these at the fuzzingserver's report (harpia's client).
INDEX = Path(os.environ.get("AUTOBAHN_INDEX", AUTOBAHN_DIR / "reports" / "servers" / "index.json"))
WSTEST_LOG = Path(os.environ.get("AUTOBAHN_WSTEST_LOG", AUTOBAHN_DIR / "reports" / "wstest.log"))

pytestmark = pytest.mark.autobahn


def _load_report_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("harpia_autobahn_report", AUTOBAHN_DIR / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


report = _load_report_module()

NO_REPORT = f"no Autobahn report at {INDEX.relative_to(REPO)}: run ci/autobahn/run"

AGENT: str | None = None
RESULTS: dict[str, Any] = {}
LOAD_ERROR: str | None = None
if INDEX.exists():
    try:  # never break collection of the default test run (which deselects this module)
        AGENT, RESULTS = report.load_index(INDEX, os.environ.get("AUTOBAHN_AGENT"))
    except (ValueError, KeyError) as exc:
        LOAD_ERROR = f"cannot read {INDEX.relative_to(REPO)}: {exc!r}"
CASE_IDS = list(RESULTS)


@pytest.mark.skipif(not INDEX.exists(), reason=NO_REPORT)
def test_report_is_complete() -> None:
    """wstest silently skips the remaining cases when the server dies: compare with what it
    announced before running."""
    assert LOAD_ERROR is None, LOAD_ERROR
    assert RESULTS, f"{INDEX} has no cases"
    if not WSTEST_LOG.exists():
        # Only when someone runs this file by hand on a report copied without its log:
        # ci/autobahn/run always writes the log before it runs this test, so in CI the
        # comparison happens (and ci/autobahn/run makes the same check itself).
        pytest.skip(f"no wstest output at {WSTEST_LOG.relative_to(REPO)} to compare the case count with")
    run = report.parse_wstest_output(WSTEST_LOG.read_text(errors="replace"))
    assert run.announced is not None, "wstest output has no 'Ok, will run N test cases' line"
    missing = sorted(set(run.cases or ()) - set(RESULTS), key=report.case_key)
    assert run.announced == len(RESULTS) and not missing, (
        f"wstest announced {run.announced} cases, the report has {len(RESULTS)};"
        f" missing: {', '.join(missing[:20])}"
    )


@pytest.mark.skipif(not INDEX.exists(), reason=NO_REPORT)
@pytest.mark.parametrize("case_id", CASE_IDS or ["(no report)"])
def test_case(case_id: str) -> None:
    result = RESULTS[case_id]
    want_behavior, want_close = report.expected(case_id)
    got = (result.behavior, result.behavior_close)
    if got == (want_behavior, want_close):
        return
    details = report.case_details(INDEX, result)
    lines = [
        f"case {case_id} ({AGENT}): behavior {result.behavior} (expected {want_behavior}),"
        f" close behavior {result.behavior_close} (expected {want_close}),"
        f" remote close code {result.remote_close_code}",
    ]
    for field in ("description", "expectation", "result", "resultClose"):
        if details.get(field):
            lines.append(f"  {field}: {report.plain_text(str(details[field]))}")
    for field in ("expected", "received"):
        if field in details:
            text = json.dumps(details[field])
            lines.append(f"  {field}: {text[:500]}{' ...' if len(text) > 500 else ''}")
    pytest.fail("\n".join(lines), pytrace=False)
