"""Fuzz the CLI and the spec/config loaders (issue 5).

Every bad input must end in a typed error that names the field or the flag
(exit 2; 3 for a valid spec that fits nowhere), never a traceback. The argv
fuzz covers ``plan``, ``network``, ``render`` and ``simulate`` (the last always
pointed at traces that do not exist, so it fails fast instead of simulating);
commands that start services (``up``, ``down``, ``demo``, ``ui``) are left out.
The last tests pin the tracebacks these fuzzers once found (non-UTF-8 files,
deep nesting, malformed trace rows), now typed errors.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz import BAD_VALUES, VALID, junk
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ConfigError
from westflow.spec import SPEC_KEYS
from westflow_cli.main import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_OK, main

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG_FILES = ("network.yaml", "tiers.yaml", "policy.yaml")
_PROBLEMS = ("Invalid|Unknown keys in|Unknown key in|Unknown key|Unknown|Missing|Cannot read|Out of range|Duplicate"
             "|Impossible")
# "westflow: error: [<source>: ]<problem> <field> <value>..." (SpecError / ConfigError)
TYPED = re.compile(rf"westflow: error: (?:.*?: )?(?:{_PROBLEMS}) (\S*) ")  # a blank YAML key prints as nothing
# argparse: the flag or argument it could not take
ARGPARSE = re.compile(r"westflow: error: (?:argument (\S+): |the following arguments are required: (\S+)"
                      r"|unrecognized arguments: (\S*))")  # an empty argv word is printed as nothing
_n = itertools.count()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``westflow ARGV`` in-process: (exit code, stdout, stderr). Any other exception propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: 2 on bad input, 0 after --help
            code = exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    return code, out.getvalue(), err.getvalue()


def check_outcome(code: int, out: str, err: str) -> str | None:
    """Assert a clean outcome; the field or flag an exit-2 error names (None otherwise)."""
    assert code in (EXIT_OK, EXIT_BAD_INPUT, EXIT_INFEASIBLE), (code, err[-2000:])
    assert "Traceback" not in out and "Traceback" not in err
    if code == EXIT_INFEASIBLE:
        assert "westflow: infeasible:" in err and "To fix:" in err
    if code != EXIT_BAD_INPUT:
        return None
    m = TYPED.search(err) or ARGPARSE.search(err)
    assert m, f"exit 2 without a named field or flag: {err[-1000:]!r}"
    return next(g for g in m.groups() if g is not None)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths the argv fuzz picks from (all under a tmp dir; nothing under it is a trace)."""
    d = tmp_path_factory.mktemp("cli-fuzz")
    bad_cfg = d / "bad-config"
    shutil.copytree(CONFIG_DIR, bad_cfg)
    (bad_cfg / "tiers.yaml").write_text("tiers: [{name: batch}]\n")
    (d / "broken.yaml").write_text("name: [x\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "gold.yaml").write_text("name: x\ntier: gold\n")
    (d / "huge.yaml").write_text("name: huge\ntier: realtime\norigin: shanghai\naccelerator: cann:4000\n")
    (d / "out").mkdir()
    examples = CONFIG_DIR / "examples"
    return {"good": examples / "cuda_batch.yaml", "rt": examples / "realtime_scoring.yaml",
            "broken": d / "broken.yaml", "list": d / "list.yaml", "gold": d / "gold.yaml", "huge": d / "huge.yaml",
            "missing": d / "missing.yaml", "dir": d, "out": d / "out", "config": CONFIG_DIR, "bad-config": bad_cfg,
            "no-config": d / "no-config", "no-traces": d / "no-traces"}


WORDS = ["--json", "--policy", "--seed", "--out", "--trace", "--traces-dir", "--days", "--batch-load",
         "--realtime-load", "--processes", "--prefill-ms", "--config-dir", "-h", "--", "-", "--nope", "kuberay",
         "launcher", "all", "westflow", "east-first", "cheapest", "round-robin", "random", "greedy", "itp",
         "azure-conv", "0", "1", "-3", "2.5", "nan", "abc", "", " ", "é", "plan", "network"]


@st.composite
def argvs(draw: st.DrawFn, files: dict[str, Path]) -> list[str]:
    paths = st.sampled_from(sorted(files)).map(lambda k: str(files[k]))
    argv: list[str] = []
    if draw(st.integers(0, 3)) == 0:
        argv += ["--config-dir", str(files[draw(st.sampled_from(["config", "bad-config", "no-config", "good"]))])]
    command = draw(st.sampled_from(["plan", "plan", "plan", "network", "render", "simulate", "plam", "", "--json"]))
    argv.append(command)
    if command == "plan" and draw(st.booleans()):
        spec = draw(st.sampled_from(["good", "rt", "broken", "list", "gold", "huge", "missing", "dir"]))
        argv.append(str(files[spec]))
    if command == "render" and draw(st.booleans()):
        argv.append(draw(st.sampled_from(["kuberay", "launcher"])))
    argv += draw(st.lists(st.sampled_from(WORDS) | paths | st.text(max_size=6), max_size=6))
    if command == "render":
        argv += ["--out", str(files["out"])]  # the last --out wins: never write outside the tmp dir
    if command == "simulate":
        argv += ["--traces-dir", str(files["no-traces"])]  # fail fast on loading, never simulate
    return argv


def test_cli_argv_fuzz(files: dict[str, Path]) -> None:
    @SETTINGS
    @given(argv=argvs(files))
    def fuzz(argv: list[str]) -> None:
        with contextlib.chdir(files["dir"]):  # a relative path written by mistake lands in the tmp dir
            code, out, err = run_cli(argv)
        check_outcome(code, out, err)

    fuzz()


# -- spec files -------------------------------------------------------------------------------

BROKEN_YAML = ["{", "[", "name: [x", "a: b: c", "\t- x", "name: x\n  bad: indent", "*alias", "? [a, b]\n: 1",
               "!!python/object:os.system ['true']", "---\n---\nname: x", "%YAML 9.9\n---\nx", "name: x\nname: y",
               "\x00", "name: 'unterminated", "- - - -", "~", "", "...", "{name: x, {a: b}: c}"]


def _yaml_dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


spec_texts = st.one_of(
    st.text(max_size=80),
    st.sampled_from(BROKEN_YAML),
    st.tuples(st.sampled_from(BROKEN_YAML), st.just(_yaml_dump(VALID))).map(lambda t: t[1] + t[0]),
    st.dictionaries(st.sampled_from([*SPEC_KEYS, "gpus", "zone", "Name", ""]), junk, max_size=8).map(_yaml_dump),
    junk.map(_yaml_dump),
)


def _write(dir_: Path, text: str) -> Path:
    p = dir_ / f"spec-{next(_n)}.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_plan_fuzzed_spec_files(files: dict[str, Path]) -> None:
    @SETTINGS
    @given(text=spec_texts, json_out=st.booleans())
    def fuzz(text: str, json_out: bool) -> None:
        path = _write(files["dir"], text)
        code, out, err = run_cli(["plan", str(path), *(["--json"] if json_out else [])])
        check_outcome(code, out, err)

    fuzz()


def test_plan_spec_with_one_bad_field_names_that_field(files: dict[str, Path]) -> None:
    @SETTINGS
    @given(field=st.sampled_from(sorted(BAD_VALUES)), data=st.data())
    def fuzz(field: str, data: st.DataObject) -> None:
        path = _write(files["dir"], _yaml_dump({**VALID, field: data.draw(BAD_VALUES[field])}))
        code, out, err = run_cli(["plan", str(path)])
        named = check_outcome(code, out, err)
        assert code == EXIT_BAD_INPUT, f"accepted bad {field}: {path.read_text()!r}"
        assert named is not None and named.split(".")[0] == field, err
        assert str(path) in err

    fuzz()


# -- config dirs ------------------------------------------------------------------------------

_TEXT = {name: (CONFIG_DIR / name).read_text(encoding="utf-8") for name in CONFIG_FILES}
_CONFIG = {name: yaml.safe_load(text) for name, text in _TEXT.items()}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path in a YAML document (the root included)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):  # the first entries are enough: the schema is per entry
            yield from _paths(v, (*prefix, i))


PATHS = {name: list(_paths(doc)) for name, doc in _CONFIG.items()}


@st.composite
def config_edits(draw: st.DrawFn) -> tuple[str, str]:
    """(file name, new text): the real file with one value replaced, or something else entirely."""
    name = draw(st.sampled_from(CONFIG_FILES))
    how = draw(st.sampled_from(["mutate", "mutate", "mutate", "junk", "text", "broken"]))
    if how == "junk":
        return name, _yaml_dump(draw(junk))
    if how == "text":
        return name, draw(st.text(max_size=60))
    if how == "broken":
        return name, draw(st.sampled_from(BROKEN_YAML))
    import copy

    doc = copy.deepcopy(_CONFIG[name])
    path = draw(st.sampled_from(PATHS[name]))
    value = draw(junk | st.sampled_from(["", "x", -1, 0, 1e308, None, [], {}, {"extra": 1}]))
    if not path:
        return name, _yaml_dump(value)
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return name, _yaml_dump(doc)


def test_load_network_fuzzed_config_dirs_name_the_file(files: dict[str, Path]) -> None:
    @SETTINGS
    @given(edit=config_edits(), via_cli=st.integers(0, 2))
    def fuzz(edit: tuple[str, str], via_cli: int) -> None:
        name, text = edit
        i = next(_n)
        d = files["dir"] / f"config-{i}"
        d.mkdir()
        for f in CONFIG_FILES:
            (d / f).write_text(text if f == name else _TEXT[f], encoding="utf-8")
        try:
            load_network(d)
        except ConfigError as exc:
            assert exc.file == str(d / name), (exc.file, name)
            assert str(d / name) in str(exc) and exc.field
            bad = True
        else:
            bad = False
        # and through the CLI: a third of the examples (loading dominates the time), drawn, so that a
        # failing example replays the same way
        if via_cli == 0:
            code, out, err = run_cli(["--config-dir", str(d), "network"])
            check_outcome(code, out, err)
            assert code == (EXIT_BAD_INPUT if bad else EXIT_OK), err
            if bad:
                assert str(d / name) in err

    fuzz()


# -- tracebacks the fuzzers once found, now typed errors ---------------------------------------


def test_non_utf8_spec_file_is_a_spec_error(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    code, out, err = run_cli(["plan", str(p)])
    assert check_outcome(code, out, err) == "<file>" and code == EXIT_BAD_INPUT


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    shutil.copytree(CONFIG_DIR, tmp_path / "cfg")
    (tmp_path / "cfg" / "tiers.yaml").write_bytes(b"tiers: [{name: caf\xe9}]\n")
    code, out, err = run_cli(["--config-dir", str(tmp_path / "cfg"), "network"])
    assert code == EXIT_BAD_INPUT and "tiers.yaml" in err


def test_deeply_nested_yaml_is_a_spec_error(tmp_path: Path) -> None:
    p = tmp_path / "deep.yaml"
    p.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    code, out, err = run_cli(["plan", str(p)])
    assert code == EXIT_BAD_INPUT and check_outcome(code, out, err)


TRACE_HEADER = "submit_s,duration_s,accelerators,tier,origin,family\n"
BAD_TRACES = {
    "no-header": ("0,60,1,batch\n", None),
    "bad-tier": (TRACE_HEADER + "0,60,1,gold,,\n", None),
    "bad-family": (TRACE_HEADER + "0,60,1,batch,,tpu\n", None),
    "bad-number": (TRACE_HEADER + "soon,60,1,batch,,\n", None),
    "fractional-count": (TRACE_HEADER + "0,60,1.5,batch,,\n", None),
    "short-row": (TRACE_HEADER + "0,60\n", None),
}


@pytest.mark.parametrize("name", list(BAD_TRACES), ids=list(BAD_TRACES))
def test_malformed_trace_csv_is_a_spec_error(tmp_path: Path, name: str) -> None:
    p = tmp_path / f"{name}.csv"
    p.write_text(BAD_TRACES[name][0])
    code, out, err = run_cli(["simulate", "--trace", str(p), "--out", str(tmp_path / "sim"), "--processes", "1"])
    named = check_outcome(code, out, err)
    assert code == EXIT_BAD_INPUT and named and "trace" in err


def test_network_command_with_an_unbounded_realtime_tier(files: dict[str, Path]) -> None:
    """Found by the fuzz above: ``max_rtt_ms: null`` on realtime is valid (no bound); the report said so by crashing."""
    d = files["dir"] / "unbounded-realtime"
    shutil.copytree(CONFIG_DIR, d)
    (d / "tiers.yaml").write_text("tiers:\n- {name: realtime, max_rtt_ms: null}\n- {name: batch, max_rtt_ms: null}\n")
    code, out, err = run_cli(["--config-dir", str(d), "network"])
    assert (code, err) == (EXIT_OK, "")
    assert "within the realtime bound (no bound in tiers.yaml: every city)" in out
    matrix = out.split("every city)", 1)[1]
    assert "*" in matrix and all(cell.endswith("*") for line in matrix.strip().splitlines()[2:]
                                 for cell in line.split()[1:])
