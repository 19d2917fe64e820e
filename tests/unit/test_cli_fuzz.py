"""Fuzz every CLI command that takes input: ``plan``, ``simulate``, ``render``, ``network`` (issues 5, 12).

Each command's fuzz draws, for every input it takes,

- paths: a good file, a directory, a missing path, ``/dev/zero``, a non-UTF-8 file, an existing
  file where a directory is wanted, and unwritable outputs (under a file, under ``/proc``);
- numbers: NaN, inf, negative, zero, huge, non-ASCII digits, junk text, and good values;
- YAML: good specs and configs, with aliases (harmless ones and billion-laughs bombs), duplicate
  keys, deep nesting, huge scalars, NaN/inf/1e308, broken YAML and random text;

and knows from what it drew whether the input is good. Bad input must end in exit 2 (3 for a
good spec that fits nowhere) with one ``westflow: error:`` line, short, and no traceback; exit 0
only where every part of the input is good. Commands run in-process (``main(argv)``) on a small
synthetic network, so a valid ``simulate`` takes a fraction of a second.

Examples: :data:`FUZZ` is the ``cli-fuzz`` settings profile, 2,000 examples per command,
``derandomize=True``: the same examples in every run (CI is deterministic; a failure replays by
running the test again, and hypothesis prints the failing argv and a ``@reproduce_failure`` blob).
``WESTFLOW_CLI_FUZZ=cli-fuzz-dev`` runs 200 random ones instead. Commands that start services
(``up``, ``down``, ``demo``, ``ui``, ``submit``, ``init``) are left out.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz import BAD_VALUES, VALID, junk
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ConfigError
from westflow.placement import POLICY_NAMES
from westflow.spec import SPEC_KEYS
from westflow.yamlio import parse_yaml
from westflow_cli.main import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_OK, main

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("cli-fuzz", max_examples=2000, derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=_HEALTH)
settings.register_profile("cli-fuzz-dev", max_examples=200, derandomize=False, database=None, deadline=None,
                          print_blob=True, suppress_health_check=_HEALTH)
FUZZ = settings.get_profile(os.environ.get("WESTFLOW_CLI_FUZZ", "cli-fuzz"))
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG_FILES = ("network.yaml", "tiers.yaml", "policy.yaml")
_PROBLEMS = ("Invalid|Unknown keys in|Unknown key in|Unknown key|Unknown|Missing|Cannot read|Out of range|Duplicate"
             "|Impossible|Too large|Too many|Too deep|Recursive|Cannot write")
# "westflow: error: [<source>: ]<problem> <field> <value>..." (SpecError / ConfigError)
TYPED = re.compile(rf"westflow: error: (?:.*?: )?(?:{_PROBLEMS}) (\S*) ")  # a blank YAML key prints as nothing
# argparse: the flag or argument it could not take
ARGPARSE = re.compile(r"westflow: error: (?:argument (\S+): |the following arguments are required: (\S+)"
                      r"|unrecognized arguments: (\S*))")  # an empty argv word is printed as nothing
_n = itertools.count()

# A small synthetic network: two DCs (east CUDA, west Ascend), two cities; loads in a few ms.
SMALL_NETWORK = """\
transfer:
  - {from: east, to: west, bandwidth_gbps: 10, cost_cny_per_gb: 0.30}
  - {from: west, to: east, bandwidth_gbps: 10, cost_cny_per_gb: 0.30}
  - {from: east, to: east, bandwidth_gbps: 25, cost_cny_per_gb: 0.10}
  - {from: west, to: west, bandwidth_gbps: 25, cost_cny_per_gb: 0.10}
ray_clusters: [{name: east}, {name: west}]
data_centers:
  - {id: wuhu, name: Wuhu, hub: YRD, region: east, lat: 31.33, lon: 118.38, pue: 1.25, price_cny_kwh: 0.7,
     ray_cluster: east, cpus: 64, memory_gb: 512, accelerators: [{family: cuda, model: H800, count: 8, watts: 700}]}
  - {id: zhongwei, name: Zhongwei, hub: Ningxia, region: west, lat: 37.5, lon: 105.18, pue: 1.15,
     price_cny_kwh: 0.36, ray_cluster: west, cpus: 64, memory_gb: 512,
     accelerators: [{family: cann, model: Ascend910B, count: 8, watts: 400}]}
cities:
  - {id: shanghai, name: Shanghai, lat: 31.23, lon: 121.47}
  - {id: beijing, name: Beijing, lat: 39.9, lon: 116.4}
"""
SMALL_TIERS = "tiers:\n- {name: realtime, max_rtt_ms: 20}\n- {name: batch, max_rtt_ms: null}\n"
# One batch job and one real-time request: a one-policy simulation of it takes well under a second.
TINY_TRACE = "submit_s,duration_s,accelerators,tier,origin,family\n0,600,1,batch,,\n300,60,2,realtime,shanghai,\n"


def write_small_config(d: Path) -> Path:
    """The small network's config dir under ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "network.yaml").write_text(SMALL_NETWORK)
    (d / "tiers.yaml").write_text(SMALL_TIERS)
    return d


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
    lines = [ln for ln in err.splitlines() if ln.startswith("westflow: error:")]
    assert len(lines) == 1 and len(lines[0]) < 1500, f"not one short error line: {err[-3000:]!r}"
    m = TYPED.search(err) or ARGPARSE.search(err)
    assert m, f"exit 2 without a named field or flag: {err[-1000:]!r}"
    return next(g for g in m.groups() if g is not None)


def expect(good: bool, code: int, out: str, err: str, argv: list[str], *, infeasible_ok: bool = False) -> None:
    """Exit 0 (or 3 where allowed) for good input, 2 (or 3) for bad; never a traceback."""
    check_outcome(code, out, err)
    event(f"exit {code} on {'good' if good else 'bad'} input")  # the spread, in --hypothesis-show-statistics
    if good:
        assert code in ((EXIT_OK, EXIT_INFEASIBLE) if infeasible_ok else (EXIT_OK,)), (argv, err[-1500:])
    else:
        assert code in (EXIT_BAD_INPUT, EXIT_INFEASIBLE), f"bad input accepted: {argv} -> {code}"


# -- what the fuzz draws: (argv words, good?) ------------------------------------------------


@dataclass(frozen=True)
class Drawn:
    """Argv words for one input and whether they are good."""

    words: tuple[str, ...]
    good: bool


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixed paths the fuzz draws from (all under one tmp dir, or read-only system paths)."""
    d = tmp_path_factory.mktemp("cli-fuzz")
    (d / "file").write_text("x\n")
    (d / "latin1").write_bytes(b"name: caf\xe9\nsubmit_s,duration_s,accelerators,tier\n0,60,1,b\xe9tch\n")
    (d / "tiny.csv").write_text(TINY_TRACE)
    (d / "header-only.csv").write_text("submit_s,duration_s,accelerators,tier\n")
    (d / "bad-row.csv").write_text("submit_s,duration_s,accelerators,tier\nnan,60,1,batch\n")
    (d / "far.csv").write_text("submit_s,duration_s,accelerators,tier\n1e300,60,1,realtime\n")
    (d / "no-header.csv").write_text("0,60,1,batch\n")
    (d / "dir").mkdir()
    good_cfg = write_small_config(d / "config")
    bad_cfg = write_small_config(d / "bad-config")
    (bad_cfg / "tiers.yaml").write_text("tiers: [{name: batch}]\n")
    zero_cfg = write_small_config(d / "zero-config")
    (zero_cfg / "network.yaml").unlink()
    (zero_cfg / "network.yaml").symlink_to("/dev/zero")
    dup_cfg = write_small_config(d / "dup-config")
    (dup_cfg / "tiers.yaml").write_text(SMALL_TIERS + "tiers: []\n")
    return {"root": d, "file": d / "file", "latin1": d / "latin1", "tiny": d / "tiny.csv", "dir": d / "dir",
            "header-only": d / "header-only.csv", "bad-row": d / "bad-row.csv", "far": d / "far.csv",
            "no-header": d / "no-header.csv", "missing": d / "missing", "under-file": d / "file" / "sub",
            "zero": Path("/dev/zero"), "proc": Path("/proc/westflow-fuzz/out"), "config": good_cfg,
            "bad-config": bad_cfg, "zero-config": zero_cfg, "dup-config": dup_cfg}


def config_dirs(p: dict[str, Path]) -> st.SearchStrategy[Drawn]:
    good = st.just(Drawn(("--config-dir", str(p["config"])), True))
    bad = st.sampled_from(["bad-config", "zero-config", "dup-config", "missing", "file", "dir", "zero"]).map(
        lambda k: Drawn(("--config-dir", str(p[k])), False))
    return st.one_of(good, good, bad)


def _num_text(x: float) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def numbers(flag: str, good: st.SearchStrategy[Any], bad_extra: tuple[str, ...] = ()) -> st.SearchStrategy[Drawn]:
    """``flag VALUE``: a good value, or NaN, inf, huge, negative, non-ASCII, junk (``bad_extra`` too)."""
    bad = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e308", "-1e308", "9" * 30, "-1", "-0.5", "\u0663", "1\u0663",
                           "", " ", "x", "0x10", "1,5", *bad_extra]) | st.floats(max_value=-1e-9).map(_num_text)
    return st.one_of(good.map(lambda v: Drawn((flag, _num_text(v)), True)),
                     bad.map(lambda t: Drawn((flag, t), False)))


def out_dirs(p: dict[str, Path]) -> st.SearchStrategy[Drawn]:
    """``--out``: an existing or new dir under tmp (good), or a file, a path under a file, /proc, ''."""
    fresh = st.integers(0, 10**9).map(lambda i: Drawn(("--out", str(p["root"] / "outs" / f"o{i}")), True))
    existing = st.just(Drawn(("--out", str(p["dir"])), True))
    bad = st.sampled_from(["file", "under-file", "proc", "latin1", "zero"]).map(
        lambda k: Drawn(("--out", str(p[k])), False)) | st.just(Drawn(("--out", ""), False))
    return st.one_of(fresh, existing, bad)


def combine(parts: list[Drawn]) -> Drawn:
    return Drawn(tuple(w for d in parts for w in d.words), all(d.good for d in parts))


# Trailing junk: never a valid argv word for any command here (no help, no store_true flag).
_KINDS = ("kuberay", "launcher")
JUNK = st.sampled_from(["--nope", "-", "--out", "--days", "--policy", "--seed", "-x", "é", "plam"]) | (
    st.text(max_size=6).filter(lambda t: (not t.startswith("-") or t.startswith("--n")) and t not in _KINDS))


@contextlib.contextmanager
def _in(d: Path) -> Iterator[None]:
    with contextlib.chdir(d):  # a relative path written by mistake lands in the tmp dir
        yield


# -- YAML: good specs, and every hostile feature ------------------------------------------------


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


GOOD_SPECS = [
    {"name": "fuzz", "accelerator": "H800:2", "cpus": 4, "memory_gb": 8},
    {"name": "asc", "tier": "batch", "accelerator": {"family": "cann", "count": 4}, "duration_hours": 2},
    {"name": "rt", "tier": "realtime", "origin": "shanghai", "accelerator": "any:1", "priority": 5},
    {"name": "cpu-only", "accelerator": "cpu", "cpus": 2, "inputs": [{"name": "d", "region": "west", "size_gb": 1}]},
]


def _laughs(levels: int, key: str) -> str:
    lines = [f"b0: &b0 [{','.join(['lol'] * 9)}]"]
    lines += [f"b{i}: &b{i} [{','.join([f'*b{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{key}: *b{levels - 1}\n"


@st.composite
def spec_texts(draw: st.DrawFn) -> tuple[str, bool | None]:
    """(YAML text, good?): good is None where only the product can tell (random text)."""
    base = dict(draw(st.sampled_from(GOOD_SPECS)))
    how = draw(st.sampled_from(["good", "alias", "bomb", "duplicate", "deep", "huge", "number", "broken", "text",
                                "bytes-like", "junk-field", "junk-dict", "list-root"]))
    if how == "good":
        return _dump(base), True
    if how == "alias":  # harmless anchors and aliases: still a good spec
        return f"name: &n {base['name']}\ntenant: *n\naccelerator: &a cpu\n", True
    if how == "bomb":
        levels = draw(st.integers(2, 9))
        key = draw(st.sampled_from(["inputs", "name", "accelerator", "zzz"]))
        return _laughs(levels, key), False
    if how == "duplicate":
        key = draw(st.sampled_from(sorted(base)))
        return _dump(base) + _dump({key: base[key]}), False
    if how == "deep":
        depth = draw(st.integers(2, 3000))
        key = draw(st.sampled_from(["name", "accelerator", "inputs", "cpus"]))
        rest = _dump({k: v for k, v in base.items() if k != key})
        return rest + f"{key}: " + "[" * depth + "]" * depth + "\n", False
    if how == "huge":
        key = draw(st.sampled_from(["name", "tier", "origin", "accelerator", "cpus", "zzz" * 50]))
        size = draw(st.sampled_from([300, 5000, 200_000]))
        value = draw(st.sampled_from(["x" * size, "9" * size, "é" * size]))
        return _dump({k: v for k, v in base.items() if k != key}) + f"{key}: {value}\n", False
    if how == "number":
        key = draw(st.sampled_from(["cpus", "memory_gb", "duration_hours", "priority", "deadline_hours"]))
        # memory_gb may be 0 (a step that reserves no memory): its bad bound is below 0
        low, zero = {"priority": ("-1001", "1001"), "memory_gb": ("-1", "-0.001")}.get(key, ("-1", "0"))
        value = draw(st.sampled_from([".nan", ".inf", "-.inf", "1e308", "-1e308", "1e400", low, zero, "9" * 400,
                                      "'\u0663'", "1_000_000_000"]))
        return _dump({k: v for k, v in base.items() if k != key}) + f"{key}: {value}\n", False
    if how == "broken":
        return draw(st.sampled_from(BROKEN_YAML)), None
    if how == "text":
        return draw(st.text(max_size=80)), None
    if how == "bytes-like":
        return _dump(base) + draw(st.sampled_from(["\x00", "\x1f", "\ufeff", "\ud7ff", "\x85"])) + "\n", None
    if how == "junk-dict":
        keys = st.sampled_from([*SPEC_KEYS, "gpus", "zone", "Name", ""])
        return _dump(draw(st.dictionaries(keys, junk, max_size=8))), None
    if how == "list-root":
        return _dump([base]), False
    bad_key = draw(st.sampled_from(["gpus", "zone", "Name", "", "cpus "]))
    return _dump({**base, bad_key: draw(junk)}), False


BROKEN_YAML = ["{", "[", "name: [x", "a: b: c", "\t- x", "name: x\n  bad: indent", "*alias", "? [a, b]\n: 1",
               "!!python/object:os.system ['true']", "---\n---\nname: x", "%YAML 9.9\n---\nx", "name: x\nname: y",
               "\x00", "name: 'unterminated", "- - - -", "~", "", "...", "{name: x, {a: b}: c}", "&a [*a]",
               "name: &a x\nx: &a y", "<<: 1"]


def _write(dir_: Path, text: str) -> Path:
    p = dir_ / f"spec-{next(_n)}.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    return p


def _maybe(draw: st.DrawFn, strategy: st.SearchStrategy[Drawn], p_absent: int = 2) -> list[Drawn]:
    """The drawn option, or nothing (its default, which is good) one time in ``p_absent``."""
    return [] if draw(st.integers(0, p_absent - 1)) == 0 else [draw(strategy)]


def _junk(draw: st.DrawFn) -> list[Drawn]:
    return [Drawn((draw(JUNK),), False)] if draw(st.integers(0, 9)) == 0 else []


@st.composite
def plan_argvs(draw: st.DrawFn, p: dict[str, Path]) -> tuple[Drawn, bool | None, list[str]]:
    """``plan``: (argv, good? (None: only the product can tell), the spec texts written)."""
    parts = _maybe(draw, config_dirs(p), 3)
    parts.append(Drawn(("plan",), True))
    unknown = False
    texts = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.integers(0, 3)):
            text, good = draw(spec_texts())
            texts.append(text)
            unknown |= good is None
            parts.append(Drawn((str(_write(p["root"] / "specs", text)),), good is not False))
        else:
            key = draw(st.sampled_from(["dir", "missing", "zero", "latin1", "under-file", "file", "tiny"]))
            parts.append(Drawn((str(p[key]),), False))
    parts += _maybe(draw, st.sampled_from(POLICY_NAMES).map(lambda n: Drawn(("--policy", n), True))
                    | st.sampled_from(["greedy", "", "ALL"]).map(lambda n: Drawn(("--policy", n), False)))
    parts += _maybe(draw, numbers("--seed", st.integers(0, 2**32 - 1), ("4294967296",)))
    parts += _maybe(draw, st.just(Drawn(("--json",), True)))
    parts += _junk(draw)
    argv = combine(parts)
    return argv, (None if unknown and argv.good else argv.good), texts


def test_plan_fuzz(paths: dict[str, Path]) -> None:
    (paths["root"] / "specs").mkdir(exist_ok=True)

    @FUZZ
    @given(drawn=plan_argvs(paths))
    def fuzz(drawn: tuple[Drawn, bool | None, list[str]]) -> None:
        argv, good, texts = drawn
        with _in(paths["root"]):
            code, out, err = run_cli(list(argv.words))
        if good is None:  # random or broken text: any clean outcome, but 0 only for what parses as a spec
            check_outcome(code, out, err)
            if code == EXIT_OK:
                assert all(isinstance(parse_yaml(t), dict) for t in texts), argv
        else:
            expect(good, code, out, err, list(argv.words), infeasible_ok=True)

    fuzz()


@st.composite
def simulate_argvs(draw: st.DrawFn, p: dict[str, Path]) -> Drawn:
    """``simulate`` on the small network: traces, numbers and --out drawn; always one policy."""
    parts = [draw(config_dirs(p)), Drawn(("simulate",), True)]
    for _ in range(draw(st.integers(1, 2))):
        good_trace = st.just(Drawn(("--trace", str(p["tiny"])), True))
        bad_trace = st.sampled_from(["dir", "missing", "zero", "latin1", "under-file", "file", "header-only",
                                     "bad-row", "far", "no-header"]).map(lambda k: Drawn(("--trace", str(p[k])), False))
        named = st.sampled_from(["itp", "azure-conv", "azure-code", ""]).map(lambda n: Drawn(("--trace", n), False))
        parts.append(draw(st.one_of(good_trace, good_trace, bad_trace, named)))
    # --traces-dir never holds the real traces: a named trace is always missing, so fails fast
    parts += _maybe(draw, st.sampled_from(["dir", "missing", "file", "zero"]).map(
        lambda k: Drawn(("--traces-dir", str(p[k])), True)))
    parts.append(draw(st.sampled_from(POLICY_NAMES).map(lambda n: Drawn(("--policy", n), True))
                      | st.sampled_from(["greedy", ""]).map(lambda n: Drawn(("--policy", n), False))))
    parts.append(draw(st.sampled_from(["1"]).map(lambda n: Drawn(("--processes", n), True))
                      | st.sampled_from(["0", "-1", "65", "1e9", "nan", "x", "\u0661", ""]).map(
                          lambda n: Drawn(("--processes", n), False))))
    parts += _maybe(draw, numbers("--days", st.sampled_from([0.01, 0.05, 0.1]), ("0", "367", "1e-320")))
    parts += _maybe(draw, numbers("--batch-load", st.sampled_from([0, 0.2, 0.55, 1.0, 3.0]), ("101",)))
    parts += _maybe(draw, numbers("--realtime-load", st.sampled_from([0, 0.3, 1.0]), ("100.5",)))
    parts += _maybe(draw, numbers("--prefill-ms", st.sampled_from([0, 0.5, 10.0]), ("60001",)), 4)
    parts += _maybe(draw, numbers("--decode-ms", st.sampled_from([0, 15.0]), ("1e6",)), 4)
    parts += _maybe(draw, numbers("--seed", st.integers(0, 2**32 - 1), ("4294967296",)), 4)
    parts.append(draw(out_dirs(p)))
    parts += _junk(draw)
    return combine(parts)


def test_simulate_fuzz(paths: dict[str, Path]) -> None:
    @FUZZ
    @given(argv=simulate_argvs(paths))
    def fuzz(argv: Drawn) -> None:
        with _in(paths["root"]):
            code, out, err = run_cli(list(argv.words))
        expect(argv.good, code, out, err, list(argv.words))

    fuzz()


@st.composite
def render_argvs(draw: st.DrawFn, p: dict[str, Path]) -> Drawn:
    """``render KIND --out DIR``: either may be missing (both are required), bad, or good."""
    parts = _maybe(draw, config_dirs(p), 4) + [Drawn(("render",), True)]
    kinds = st.sampled_from(_KINDS).map(lambda k: Drawn((k,), True)) | st.sampled_from(
        ["kuberay2", "", "KubeRay", "helm"]).map(lambda k: Drawn((k,), False))
    kind = draw(kinds) if draw(st.integers(0, 7)) else Drawn((), False)
    out = draw(out_dirs(p)) if draw(st.integers(0, 7)) else Drawn((), False)
    parts += [kind, out] if draw(st.booleans()) else [out, kind]
    parts += _junk(draw)
    return combine(parts)


def test_render_fuzz(paths: dict[str, Path]) -> None:
    @FUZZ
    @given(argv=render_argvs(paths))
    def fuzz(argv: Drawn) -> None:
        with _in(paths["root"]):
            code, out, err = run_cli(list(argv.words))
        expect(argv.good, code, out, err, list(argv.words))

    fuzz()


@st.composite
def network_texts(draw: st.DrawFn) -> tuple[str, str, bool]:
    """(file, text, good?): the small config's file, good or with one hostile YAML feature."""
    name = draw(st.sampled_from(["network.yaml", "tiers.yaml", "policy.yaml"]))
    base = {"network.yaml": SMALL_NETWORK, "tiers.yaml": SMALL_TIERS, "policy.yaml": "fill_bonus: 0.15\n"}[name]
    how = draw(st.sampled_from(["good", "alias", "bomb", "duplicate", "deep", "huge", "number"]))
    if how == "good":
        return name, base, True
    if how == "alias":
        if name == "tiers.yaml":
            return name, "tiers:\n- &t {name: realtime, max_rtt_ms: 20}\n- {<<: *t, name: batch}\n", True
        return name, base + "# a comment with *no alias\n", True
    if how == "bomb":
        return name, base + _laughs(draw(st.integers(6, 9)), "zzz"), False
    if how == "duplicate":
        first = base.splitlines()[0].split(":")[0]
        return name, base + f"{first}: []\n", False
    if how == "deep":
        depth = draw(st.integers(2, 3000))
        return name, base + "zzz: " + "[" * depth + "]" * depth + "\n", False
    if how == "huge":
        return name, base + "zzz: " + "x" * draw(st.sampled_from([300, 100_000])) + "\n", False
    key = {"network.yaml": "latency: {route_inflation: %s}\n", "tiers.yaml": "x: %s\n",
           "policy.yaml": "hour_value_cny: %s\n"}[name]
    value = draw(st.sampled_from([".nan", "-.inf", "1e400", "-1", "'\u0663'"]))
    return name, base + key % value, False


def test_network_fuzz(paths: dict[str, Path]) -> None:
    d = write_small_config(paths["root"] / "network-fuzz")

    @FUZZ
    @given(edit=network_texts(), extra=st.integers(0, 9), config=config_dirs(paths))
    def fuzz(edit: tuple[str, str, bool], extra: int, config: Drawn) -> None:
        name, text, good = edit
        for f, t in (("network.yaml", SMALL_NETWORK), ("tiers.yaml", SMALL_TIERS), ("policy.yaml", "")):
            (d / f).write_text(text if f == name else t)
        words = ["--config-dir", str(d)] if extra else list(config.words)
        good = good if extra else config.good
        argv = [*words, "network", *(["--nope"] if extra == 1 else [])]
        with _in(paths["root"]):
            code, out, err = run_cli(argv)
        expect(good and extra != 1, code, out, err, argv)
        if code == EXIT_BAD_INPUT and extra > 1 and not good:
            assert str(d / name) in err, err

    fuzz()


# -- one bad spec field, through the CLI ------------------------------------------------------


def test_plan_spec_with_one_bad_field_names_that_field(paths: dict[str, Path]) -> None:
    @SETTINGS
    @given(field=st.sampled_from(sorted(BAD_VALUES)), data=st.data())
    def fuzz(field: str, data: st.DataObject) -> None:
        path = _write(paths["root"], _dump({**VALID, field: data.draw(BAD_VALUES[field])}))
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
        return name, _dump(draw(junk))
    if how == "text":
        return name, draw(st.text(max_size=60))
    if how == "broken":
        return name, draw(st.sampled_from(BROKEN_YAML))
    import copy

    doc = copy.deepcopy(_CONFIG[name])
    path = draw(st.sampled_from(PATHS[name]))
    value = draw(junk | st.sampled_from(["", "x", -1, 0, 1e308, None, [], {}, {"extra": 1}]))
    if not path:
        return name, _dump(value)
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return name, _dump(doc)


def test_load_network_fuzzed_config_dirs_name_the_file(paths: dict[str, Path]) -> None:
    @SETTINGS
    @given(edit=config_edits(), via_cli=st.integers(0, 2))
    def fuzz(edit: tuple[str, str], via_cli: int) -> None:
        name, text = edit
        i = next(_n)
        d = paths["root"] / f"config-{i}"
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


def test_network_command_with_an_unbounded_realtime_tier(paths: dict[str, Path]) -> None:
    """Found by the fuzz above: ``max_rtt_ms: null`` on realtime is valid (no bound); the report said so by crashing."""
    d = paths["root"] / "unbounded-realtime"
    shutil.copytree(CONFIG_DIR, d)
    (d / "tiers.yaml").write_text("tiers:\n- {name: realtime, max_rtt_ms: null}\n- {name: batch, max_rtt_ms: null}\n")
    code, out, err = run_cli(["--config-dir", str(d), "network"])
    assert (code, err) == (EXIT_OK, "")
    assert "eligible for realtime (no bound in tiers.yaml: every city)" in out
    matrix = out.split("every city)", 1)[1]
    assert "*" in matrix and all(cell.endswith("*") for line in matrix.strip().splitlines()[2:]
                                 for cell in line.split()[1:])
