"""The Rego unit tests, run through the embedded engine (rego-cpp, PyPI `regopy`).

`opa test` proves the policy under OPA; the service may decide with rego-cpp
instead, so the same tests must hold there too. This runner loads every .rego
file under a directory (test files included) plus its data files, finds each
`test_*` rule of each package, evaluates it as a query (`data.<package>.<rule>`)
and reports it as passed when the result is `true`; `false`, undefined and any
engine error are failures. (The query is compiled and run by the same rego-cpp
VM as the service's prepared entrypoint; a bundle entrypoint per test is not
used because rego-cpp's bundle builder aborts the process on the `with`
constructs the tests depend on.)

Data files follow `opa test`: every .json/.yaml/.yml file is data, placed at
the path of its directory relative to the root; files matching an --ignore
pattern (by default `capabilities.json`, which describes builtins and is not
data) are skipped.

rego-cpp can crash the whole process (a segfault, or an uncaught C++
exception that aborts) on constructs it does not support. The tests therefore
run in a worker process; when the worker dies, the test it was running is
reported as an error naming the signal and rego-cpp's last message, and a new
worker carries on with the remaining tests.
"""

from __future__ import annotations

import fnmatch
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import enforcer
from enforcer.errors import ConfigError

DEFAULT_IGNORE = ("capabilities.json",)
DATA_SUFFIXES = (".json", ".yaml", ".yml")
TEST_RULE_RE = re.compile(r"^test_[A-Za-z0-9_]*", re.MULTILINE)
PACKAGE_RE = re.compile(r"^package[ \t]+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)[ \t]*(?:#.*)?$",
                        re.MULTILINE)
DEFAULT_TIMEOUT_S = 30.0
RESULT_VAR = "aecl_test_result"
# Where this `enforcer` package was imported from (a source checkout's root, or
# the site-packages of an installed wheel): the worker imports the same one.
IMPORT_ROOT = Path(enforcer.__file__).resolve().parent.parent

Status = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class RegoTest:
    package: str  # e.g. aecl.allowlist_test
    name: str  # e.g. test_allow_listed_action
    file: str  # path relative to the policy directory
    line: int  # 1-based line of the rule's first definition

    @property
    def query(self) -> str:
        return f"data.{self.package}.{self.name}"

    @property
    def entrypoint(self) -> str:
        return f"{self.package.replace('.', '/')}/{self.name}"


@dataclass(frozen=True)
class TestResult:
    test: RegoTest
    status: Status
    detail: str = ""  # why it did not pass; empty on pass
    duration_ms: float = 0.0


@dataclass
class TestSuite:
    modules: dict[str, str]  # path relative to the directory -> source
    data: dict[str, Any]
    tests: list[RegoTest]


@dataclass
class TestReport:
    directory: str
    results: list[TestResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.status == "pass" for r in self.results)

    def summary(self) -> str:
        n = len(self.results)
        passed, failed, errors = self.count("pass"), self.count("fail"), self.count("error")
        word = "PASS" if self.ok else "FAIL"
        return f"{word}: {passed}/{n} passed, {failed} failed, {errors} errors (embedded engine, rego-cpp)"

    def render(self, *, verbose: bool = False) -> str:
        lines: list[str] = []
        for file in dict.fromkeys(r.test.file for r in self.results):
            results = [r for r in self.results if r.test.file == file]
            shown = results if verbose else [r for r in results if r.status != "pass"]
            if not shown:
                continue
            lines.append(f"{file}:")
            for r in shown:
                label = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}[r.status]
                text = f"{r.test.query}: {label} ({r.duration_ms:.1f}ms)"
                if r.detail:
                    text += f": {r.detail}"
                lines.append(text)
        if not self.results:
            lines.append(f"{self.directory}: no test_* rules found")
        lines.append("-" * 80)
        lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "engine": "embedded",
            "ok": self.ok,
            "passed": self.count("pass"),
            "failed": self.count("fail"),
            "errors": self.count("error"),
            "tests": [
                {"package": r.test.package, "name": r.test.name, "file": r.test.file, "line": r.test.line,
                 "status": r.status, "detail": r.detail, "duration_ms": r.duration_ms}
                for r in self.results
            ],
        }


# -- discovery --------------------------------------------------------------


def _ignored(rel: Path, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in patterns)


def _merge(target: dict[str, Any], value: Any, where: list[str], origin: Path) -> None:
    node = target
    for key in where[:-1] if where else []:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: data path {'.'.join(where)} collides with a non-object")
    if not where:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: data at the root must be an object")
        for k, v in value.items():
            _merge(target, v, [k], origin)
        return
    last = where[-1]
    if isinstance(node.get(last), dict) and isinstance(value, dict):
        for k, v in value.items():
            _merge(node[last], v, [k], origin)
    elif last in node:
        raise ConfigError(f"{origin}: data path {'.'.join(where)} is defined twice")
    else:
        node[last] = value


def package_of(source: str, path: str) -> str:
    m = PACKAGE_RE.search(source)
    if m is None:
        raise ConfigError(f"{path}: no package declaration this runner understands")
    return m.group(1)


def find_tests(path: str, source: str) -> list[RegoTest]:
    """The test_* rules of one module, each once (a rule may have several bodies)."""
    package = package_of(source, path)
    seen: dict[str, RegoTest] = {}
    for m in TEST_RULE_RE.finditer(source):
        name = m.group(0)
        if name not in seen:
            seen[name] = RegoTest(package, name, path, source.count("\n", 0, m.start()) + 1)
    return list(seen.values())


def load_suite(rego_dir: Path, ignore: Sequence[str] = DEFAULT_IGNORE) -> TestSuite:
    from enforcer._yaml import read_document

    if not rego_dir.is_dir():
        raise ConfigError(f"{rego_dir}: policy directory does not exist")
    modules: dict[str, str] = {}
    data: dict[str, Any] = {}
    tests: list[RegoTest] = []
    for p in sorted(rego_dir.rglob("*")):
        rel = p.relative_to(rego_dir)
        if not p.is_file() or _ignored(rel, ignore):
            continue
        if p.suffix == ".rego":
            try:
                source = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"{p}: cannot read: {e}") from e
            modules[str(rel)] = source
            tests.extend(find_tests(str(rel), source))
        elif p.suffix in DATA_SUFFIXES:
            value = read_document(p)
            if value is None:
                continue
            _merge(data, value, list(rel.parent.parts), p)
    if not modules:
        raise ConfigError(f"{rego_dir}: no .rego files")
    # The same package may be split over files: a test is one rule, run once.
    unique = list({(t.package, t.name): t for t in tests}.values())
    return TestSuite(modules=modules, data=data, tests=unique)


# -- running -----------------------------------------------------------------


def run_suite(suite: TestSuite, directory: str = "", *, timeout_s: float = DEFAULT_TIMEOUT_S,
              python: str | None = None) -> TestReport:
    """Run every test in worker processes; a crashed or hung worker costs only
    the test it was running."""
    report = TestReport(directory=directory)
    pending = list(range(len(suite.tests)))
    while pending:
        done, failure = _run_worker(suite, pending, timeout_s, python or sys.executable)
        for idx, result in done:
            report.results.append(result)
        finished = {idx for idx, _ in done}
        remaining = [i for i in pending if i not in finished]
        if len(remaining) == len(pending):  # no progress at all: never loop forever
            why = failure or "the test worker ended without running any test"
            for i in remaining:
                report.results.append(TestResult(suite.tests[i], "error", why))
            break
        pending = remaining
    order = {(t.package, t.name): n for n, t in enumerate(suite.tests)}
    report.results.sort(key=lambda r: order[(r.test.package, r.test.name)])
    return report


def run_directory(rego_dir: Path, *, ignore: Sequence[str] = DEFAULT_IGNORE,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> TestReport:
    return run_suite(load_suite(rego_dir, ignore), str(rego_dir), timeout_s=timeout_s)


def _run_worker(suite: TestSuite, indices: list[int], timeout_s: float,
                python: str) -> tuple[list[tuple[int, TestResult]], str]:
    """Run the given tests in one worker; returns the results it produced and,
    when it died, why."""
    job = {
        "modules": suite.modules,
        "data": suite.data,
        "tests": [[i, suite.tests[i].query] for i in indices],
    }
    proc = subprocess.Popen(
        [python, "-m", "enforcer.policy.rego_tests", "--worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # The worker imports this package from where the caller found it, whatever
        # the caller's cwd (`-m` puts the cwd first on sys.path).
        cwd=IMPORT_ROOT,
        env={**os.environ, "PYTHONFAULTHANDLER": "",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(IMPORT_ROOT), os.environ.get("PYTHONPATH")]))},
    )
    lines: queue.SimpleQueue = queue.SimpleQueue()
    stderr_chunks: list[bytes] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw)
        lines.put(None)

    def read_stderr() -> None:
        assert proc.stderr is not None
        stderr_chunks.append(proc.stderr.read())

    threads = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for t in threads:
        t.start()
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass

    results: list[tuple[int, TestResult]] = []
    running: int | None = None
    started = time.perf_counter()
    timed_out = False
    while True:
        try:
            raw = lines.get(timeout=timeout_s)
        except queue.Empty:
            timed_out = True
            proc.kill()
            break
        if raw is None:
            break
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if "start" in msg:
            running, started = msg["start"], time.perf_counter()
        elif "done" in msg:
            idx = msg["done"]
            results.append((idx, TestResult(suite.tests[idx], msg["status"], msg.get("detail", ""),
                                            round(msg.get("ms", 0.0), 3))))
            running = None
        elif "fatal" in msg:  # the worker could not load the suite at all
            for idx in indices:
                if idx not in {i for i, _ in results}:
                    results.append((idx, TestResult(suite.tests[idx], "error", msg["fatal"])))
            running = None
    proc.wait()
    for t in threads:
        t.join(5)
    why = ""
    if timed_out:
        why = f"no result within {timeout_s:g}s; the worker was killed"
    elif proc.returncode != 0:
        why = _describe_crash(proc.returncode, b"".join(stderr_chunks))
    if running is not None:
        elapsed = (time.perf_counter() - started) * 1000
        results.append((running, TestResult(suite.tests[running], "error", why or "the worker ended mid-test",
                                            round(elapsed, 3))))
    return results, why


def _describe_crash(returncode: int, stderr: bytes) -> str:
    text = stderr.decode(errors="replace")
    # rego-cpp's own words, when it said anything before dying.
    m = re.search(r"what\(\):\s*(.+)", text)
    tail = m.group(1).strip() if m else ""
    if not tail:
        rest = [ln for ln in text.strip().splitlines() if ln.strip()]
        tail = rest[-1].strip() if rest else ""
    if returncode < 0:
        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
        what = f"the embedded engine crashed ({how})"
    else:
        what = f"the test worker exited with status {returncode}"
    return what + (f": {tail}" if tail else "")


# -- the worker ----------------------------------------------------------------


def _engine_error(interp: Any) -> str:
    # Output.__str__ on a failed query can itself crash rego-cpp; the
    # interpreter's last error is safe to read.
    try:
        from regopy.rego_shared import rego_get_error

        return rego_get_error(interp._impl).strip() or "unknown engine error"
    except Exception:  # a regopy without this helper
        return "unknown engine error"


def evaluate_test(interp: Any, query: str) -> tuple[Status, str]:
    import regopy

    try:
        # Bound to a variable: rego-cpp answers a bare query whose value is
        # false as undefined, and a failing test should say which it was.
        out = interp.query(f"{RESULT_VAR} := {query}")
    except regopy.RegoError as e:
        return "error", f"engine error: {e}"
    except ValueError as e:
        return "error", f"engine returned unreadable output: {e}"
    if not out.ok():
        return "error", f"engine error: {_engine_error(interp)}"
    # Never call expressions() on an undefined result: rego-cpp aborts.
    node = out.node()
    if node.kind == regopy.NodeKind.Undefined:
        return "fail", "undefined (the test's body does not hold)"
    if node.kind != regopy.NodeKind.Results:
        return "error", f"engine returned a {node.kind!r} node"
    try:
        doc = json.loads(node.json())
    except ValueError as e:
        return "error", f"engine returned unparseable output: {e}"
    results = doc if isinstance(doc, list) else [doc]
    values = [r["bindings"][RESULT_VAR] for r in results
              if isinstance(r, dict) and isinstance(r.get("bindings"), dict) and RESULT_VAR in r["bindings"]]
    if len(values) != 1:
        return "error", f"expected one result, got {len(values)}"
    if values[0] is True:
        return "pass", ""
    if values[0] is False:
        return "fail", "false"
    return "fail", f"result {json.dumps(values[0])[:200]}, not true"


def _worker_main() -> int:
    import regopy

    job = json.loads(sys.stdin.buffer.read())

    def emit(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    interp = regopy.Interpreter()
    try:
        for path, source in job["modules"].items():
            interp.add_module(path, source)
        interp.add_data(job["data"])
    except regopy.RegoError as e:
        emit({"fatal": f"the policy does not compile in the embedded engine: {e}"})
        return 0
    for idx, query in job["tests"]:
        emit({"start": idx})
        t0 = time.perf_counter()
        status, detail = evaluate_test(interp, query)
        emit({"done": idx, "status": status, "detail": detail, "ms": (time.perf_counter() - t0) * 1000})
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker_main())
    print("usage: aecl policy test --engine embedded", file=sys.stderr)
    sys.exit(2)
