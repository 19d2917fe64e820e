"""Hostile input to the CLI (issue 12, item 6): each case ends in exit 2 and one line, at once.

Every case here once took minutes and gigabytes, printed a traceback, or exited 0 or 3
with nonsense. Commands run in-process (``tests.unit.test_cli_fuzz.run_cli``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from ray_cluster.local.profile import load_profile
from tests.unit.test_cli_fuzz import TINY_TRACE, run_cli, write_small_config
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ConfigError, SpecError
from westflow.spec import load_spec
from westflow.yamlio import MAX_ALIASES, MAX_SPEC_BYTES, YamlInputError, parse_yaml
from westflow_cli.main import EXIT_BAD_INPUT

LOL = '"lol"'


def billion_laughs(levels: int) -> str:
    """The classic alias bomb as a YAML list: ``levels`` lines, each alias nine times the last (~300 bytes)."""
    lines = [f"- &a [{','.join([LOL] * 9)}]"]
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"- &{cur} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def bad_input(argv: list[str], *, within_s: float = 5.0) -> str:
    """Run ``westflow ARGV``; assert exit 2, no traceback, one error line, quickly; return that line."""
    t0 = time.perf_counter()
    code, out, err = run_cli(argv)
    elapsed = time.perf_counter() - t0
    assert code == EXIT_BAD_INPUT, (code, out[-500:], err[-1000:])
    assert "Traceback" not in err + out
    lines = [ln for ln in err.splitlines() if ln.startswith("westflow: error:")]
    assert len(lines) == 1 and len(err) < 2000, err[-2000:]
    assert elapsed < within_s, f"{elapsed:.1f} s"
    return lines[0]


# -- spec and config files: size, aliases, duplicate keys ------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("levels", [8, 9])
def test_billion_laughs_spec_exits_2_at_once(tmp_path: Path, levels: int) -> None:
    """Before: 9 levels took 115 s and 3.4 GB and ended in a MemoryError traceback; 8 printed a 351 MB error."""
    p = tmp_path / "lol.yaml"
    p.write_text(billion_laughs(levels))
    assert len(p.read_bytes()) < 400
    line = bad_input(["plan", str(p)])
    assert "alias expansion" in line and str(p) in line


@pytest.mark.timeout(30)
def test_billion_laughs_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(CONFIG_DIR, cfg)
    (cfg / "tiers.yaml").write_text(billion_laughs(9))
    line = bad_input(["--config-dir", str(cfg), "network"])
    assert f"{cfg / 'tiers.yaml'}: Too large alias expansion" in line


@pytest.mark.timeout(30)
def test_dev_zero_spec_is_too_large(tmp_path: Path) -> None:
    """Before: read to the end of /dev/zero, a MemoryError traceback."""
    line = bad_input(["plan", "/dev/zero"])
    assert "Too large <file> '/dev/zero'" in line and f"{MAX_SPEC_BYTES:,} bytes" in line


def test_a_large_spec_file_is_refused_before_parsing(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    p.write_text("name: x\n# " + "x" * MAX_SPEC_BYTES + "\n")
    assert "Too large <file>" in bad_input(["plan", str(p)])


def test_duplicate_spec_key_is_refused_naming_key_and_line(tmp_path: Path) -> None:
    """Before: accepted, the last one won."""
    p = tmp_path / "dup.yaml"
    p.write_text("name: a\naccelerator: cuda:1\nname: b\n")
    line = bad_input(["plan", str(p)])
    assert "Duplicate key 'name'" in line and "line 3 repeats the key of line 1" in line


def test_duplicate_config_key_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(CONFIG_DIR, cfg)
    (cfg / "policy.yaml").write_text("fill_bonus: 0.1\nfill_bonus: 0.9\n")
    with pytest.raises(ConfigError) as exc:
        load_network(cfg)
    assert exc.value.file == str(cfg / "policy.yaml") and exc.value.value == "fill_bonus"


def test_local_profile_reads_through_the_bounded_loader(tmp_path: Path) -> None:
    p = tmp_path / "local.yaml"
    p.write_text(billion_laughs(9))
    with pytest.raises(ConfigError, match="alias expansion"):
        load_profile(load_network(), p)
    p.write_text("data_centers: [{id: wuhu}]\ndata_centers: [{id: zhongwei}]\n")
    with pytest.raises(ConfigError, match="Duplicate key 'data_centers'"):
        load_profile(load_network(), p)


@pytest.mark.parametrize("text, problem", [
    ("a: &a [*a]", "Recursive alias"),
    ("x: &a 1\ny: [" + ",".join(["*a"] * (MAX_ALIASES + 1)) + "]", "Too many aliases"),
    ("a: " + "[" * 101 + "]" * 101, "Too deep"),
], ids=["recursive", "too-many", "too-deep"])
def test_yaml_loader_refuses(text: str, problem: str) -> None:
    with pytest.raises(YamlInputError, match=problem):
        parse_yaml(text)


def test_yaml_loader_keeps_what_is_legitimate() -> None:
    assert parse_yaml("d: &d {k: 1, j: 2}\ne: {<<: *d, k: 3}\n") == {"d": {"k": 1, "j": 2}, "e": {"k": 3, "j": 2}}
    assert parse_yaml("x: [" + ",".join(["&a 1"] + ["*a"] * 20) + "]") == {"x": [1] * 21}
    assert parse_yaml("a: 1e3\nb: 1.5\nc: e5\n") == {"a": 1000.0, "b": 1.5, "c": "e5"}


def test_a_long_value_is_echoed_cut(tmp_path: Path) -> None:
    """Before: the whole value went into the message (351 MB for the 8-level bomb)."""
    p = tmp_path / "long.yaml"
    p.write_text("name: " + "x" * 5000 + "\n")
    line = bad_input(["plan", str(p)])
    assert "... (5,000 chars)" in line and len(line) < 600


# -- spec fields ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("accelerator: 'cuda:\u0663'", "Invalid accelerator 'cuda:\u0663'"),          # before: read as cuda:3
    ("accelerator: 'cuda:\u00b2'", "Invalid accelerator 'cuda:\u00b2'"),          # before: a bare ValueError text
    ("accelerator: 'cuda:99999999999999999999'", "Out of range accelerator.count"),
    ("cpus: 1e308", "Out of range cpus 1e+308; must be > 0 and <= 4096"),        # before: "must be a number"
    ("priority: 1e308", "Out of range priority 1e+308; must be >= -1000 and <= 1000"),
    ("accelerator: {family: cuda, count: 1e308}", "Out of range accelerator.count 1e+308"),
    ("cpus: .nan", "Invalid cpus nan; must be a finite number"),
    ("memory_gb: .inf", "Invalid memory_gb inf; must be a finite number"),
    ("accelerator: {family: cann, model: H800}",                                  # before: exit 3, infeasible
     "Invalid accelerator.model 'H800'; must be a cann model, as family is cann (H800 is a cuda model"),
    ("accelerator: {family: cuda, model: Ascend910B}", "Ascend910B is a cann model"),
], ids=["arabic-digit", "superscript", "huge-count", "1e308", "huge-priority", "huge-count-map", "nan", "inf",
        "cann-H800", "cuda-Ascend"])
def test_bad_spec_field_exits_2(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "spec.yaml"
    p.write_text(f"name: x\n{text}\n")
    line = bad_input(["plan", str(p)])
    assert expected in line and str(p) in line


def test_a_model_given_alone_takes_its_family_from_the_network(tmp_path: Path) -> None:
    p = tmp_path / "spec.yaml"
    p.write_text("name: x\naccelerator: {model: Ascend910B, count: 2}\n")
    assert load_spec(p, load_network()).accelerator.family.value == "cann"
    with pytest.raises(SpecError):
        load_spec(p.parent / "missing.yaml")


# -- simulate and render options ------------------------------------------------------------


@pytest.fixture()
def small(tmp_path: Path) -> str:
    """The small synthetic network's config dir."""
    return str(write_small_config(tmp_path / "small-config"))


@pytest.fixture()
def sim(tmp_path: Path, small: str) -> list[str]:
    """``westflow simulate`` on the small config and a tiny trace, one process; add the flag under test last."""
    trace = tmp_path / "tiny.csv"
    trace.write_text(TINY_TRACE)
    return ["--config-dir", small, "simulate", "--trace", str(trace), "--policy", "westflow",
            "--processes", "1", "--out", str(tmp_path / "sim")]


def _file(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("flag, value, expected", [
    ("--days", "nan", "argument --days: Out of range value 'nan'; must be a finite number > 0 and <= 366"),
    ("--days", "inf", "argument --days: Out of range value 'inf'"),
    ("--days", "-1", "argument --days: Out of range value '-1'"),
    ("--days", "\u0663", "argument --days: Invalid value '\u0663'"),
    ("--batch-load", "nan", "argument --batch-load: Out of range value 'nan'; must be a finite number >= 0"),
    ("--batch-load", "-1", "argument --batch-load: Out of range value '-1'"),
    ("--batch-load", "1e308", "argument --batch-load: Out of range value '1e308'"),
    ("--realtime-load", "inf", "argument --realtime-load: Out of range value 'inf'"),
    ("--realtime-load", "-0.5", "argument --realtime-load: Out of range value '-0.5'"),
    ("--prefill-ms", "nan", "argument --prefill-ms: Out of range value 'nan'"),
    ("--processes", "0", "argument --processes: Out of range value '0'; must be an integer >= 1 and <= 64"),
    ("--seed", "-1", "argument --seed: Out of range value '-1'"),
], ids=lambda v: str(v))
def test_simulate_bad_number_exits_2(sim: list[str], flag: str, value: str, expected: str) -> None:
    assert expected in bad_input([*sim, flag, value])


def test_simulate_bad_trace_files_exit_2(sim: list[str], tmp_path: Path) -> None:
    """Before: IsADirectoryError, UnicodeDecodeError tracebacks; /dev/zero read without end."""
    cases = {
        str(tmp_path): "is a directory",
        _file(tmp_path, "latin1.csv", b"submit_s,duration_s,accelerators,tier\n0,60,1,b\xe9tch\n"): "UTF-8",
        "/dev/zero": "not a regular file",
        _file(tmp_path, "arabic.csv", "submit_s,duration_s,accelerators,tier\n\u0663,60,1,batch\n".encode()):
            "row 1 submit_s",
        _file(tmp_path, "far.csv", b"submit_s,duration_s,accelerators,tier\n1e300,60,1,realtime\n"): "Out of range",
    }
    for trace, expected in cases.items():
        line = bad_input([*sim, "--trace", trace])
        assert expected in line and trace in line, line


def test_simulate_window_past_a_year_exits_2(sim: list[str], tmp_path: Path) -> None:
    """A tiny --batch-load stretches the trace's span past any useful window: refused, not simulated for days."""
    trace = _file(tmp_path, "span.csv", b"submit_s,duration_s,accelerators,tier\n0,60,1,batch\n86400,60,1,batch\n")
    assert "Out of range window" in bad_input([*sim, "--trace", trace, "--batch-load", "0.000001"])


@pytest.mark.parametrize("command", ["simulate", "render"])
def test_bad_out_exits_2(sim: list[str], small: str, tmp_path: Path, command: str) -> None:
    """Before: FileExistsError / FileNotFoundError tracebacks."""
    existing = _file(tmp_path, "existing", b"x")
    argv = sim if command == "simulate" else ["--config-dir", small, "render", "kuberay"]
    assert "argument --out: Invalid value" in bad_input([*argv, "--out", existing])
    assert "argument --out: Invalid value ''" in bad_input([*argv, "--out", ""])
    for unwritable in (f"{existing}/sub", "/proc/westflow-nope"):
        assert f"Cannot write --out '{unwritable}'" in bad_input([*argv, "--out", unwritable])


def test_render_into_a_directory_where_a_file_should_go_exits_2(tmp_path: Path, small: str) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(["--config-dir", small, "render", "kuberay", "--out", str(out)])
    assert code == 0, err
    for f in out.iterdir():
        f.unlink()
        f.mkdir()
    assert "Cannot write --out" in bad_input(["--config-dir", small, "render", "kuberay", "--out", str(out)])


def test_valid_simulate_still_runs(sim: list[str], tmp_path: Path) -> None:
    code, out, err = run_cli([*sim, "--days", "0.01"])
    assert code == 0, err
    assert (tmp_path / "sim" / "report.md").exists()


# -- service files (westflow services deploy): checked before any cluster is asked -------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("text", "needle"), [
    (billion_laughs(9), "alias expansion"),
    ("name: a\nname: b\ncities: [shanghai]\nmodel: m\n", "name"),
    ("name: s\ncities: [shanghai, atlantis]\nmodel: m\n", "cities[1]"),
    ("name: s\ncities: [shanghai]\nmodel: m\nmin_replicas: .nan\n", "min_replicas"),
    ("name: s\ncities: [shanghai]\nmodel: m\nmax_replicas: 1e308\n", "max_replicas"),
    ("name: s\ncities: [shanghai]\nmodel: '../../etc'\n", "model"),
    ("- just\n- a list\n", "<service>"),
], ids=["alias-bomb", "duplicate-key", "unknown-city", "nan-replicas", "huge-replicas", "model-path", "a-list"])
def test_hostile_service_file_exits_2(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "svc.yaml"
    p.write_text(text)
    line = bad_input(["services", "--state-dir", str(tmp_path / "nothing-up"), "deploy", str(p)])
    assert needle in line and str(p) in line


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_service_path_that_is_not_a_yaml_file_exits_2(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "svc.yaml"
    if kind == "directory":
        p.mkdir()
    elif kind == "binary":
        p.write_bytes(b"\xff\xfe\x00name")
    line = bad_input(["services", "--state-dir", str(tmp_path / "nothing-up"), "deploy", str(p)])
    assert str(p) in line
