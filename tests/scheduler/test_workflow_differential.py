"""Differential tests: plan_workflow gives the job graph hera_opm 1.4.0 writes, for every sample config."""

from __future__ import annotations

import os
import random
import shlex
import warnings
from pathlib import Path
from typing import Any

import pytest

from services.scheduler.workflow import PlannedJob, load_workflow, plan_workflow

mf_tools = pytest.importorskip("hera_opm.mf_tools")

FIELD = Path(os.environ.get("OBSFLOW_FIELD_DIR", Path(__file__).resolve().parents[3] / "shared" / "field"))
SAMPLE_CONFIGS = sorted((FIELD / "hera_opm" / "sample_config").glob("*.toml"))
OUR_CONFIGS = sorted((Path(__file__).parent / "data").glob("*.toml"))
FILE_COUNTS = (1, 2, 7, 10, 23)

Graph = dict[tuple[str, str | None], dict[str, Any]]


def hera_names(count: int, first_jd: float = 2459122.30000) -> list[str]:
    """HERA-style raw file names with increasing Julian dates, one correlator file (0.00018 d) apart."""
    return [f"zen.{first_jd + index * 0.00018:.5f}.sum.uvh5" for index in range(count)]


def _job_key(outfile: str) -> tuple[str, str | None]:
    if outfile in ("setup.out", "teardown.out"):
        return (outfile.removesuffix(".out").upper(), None)
    name, action, _ = outfile.rsplit(".", 2)
    return (action, name)


def _batch_fields(batch_options: str) -> dict[str, Any]:
    words = shlex.split(batch_options)
    fields: dict[str, Any] = {"ncpu": None, "queue": None, "extra": []}
    position = 0
    while position < len(words):
        word = words[position]
        if word in ("--mem", "-n", "-p", "--mail-user"):
            value = words[position + 1]
            if word == "--mem":
                fields["mem_mb"] = int(value.removesuffix("M"))
            elif word == "-n":
                fields["ncpu"] = int(value)
            elif word == "-p":
                fields["queue"] = value
            position += 2
        else:
            fields["extra"].append(word)
            position += 1
    return fields


def _wrapper_fields(wrapper: Path, command: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"timeout": None}
    for line in wrapper.read_text().splitlines():
        if line.startswith("cd ") and "working_dir" not in fields:
            fields["working_dir"] = line.removeprefix("cd ")
        words = shlex.split(line)
        if command in words:
            if words[0] == "timeout":
                fields["timeout"] = words[1]
            fields["args"] = words[words.index(command) + 1 :]
    return fields


def hera_opm_graph(config: Path, files: list[str], work_dir: Path) -> Graph:
    """Run hera_opm's build in work_dir and read its makeflow file and wrapper scripts back as a graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf_tools.build_analysis_makeflow_from_config(files, str(config), mf_name="graph.mf", work_dir=str(work_dir))
    graph: Graph = {}
    batch = ""
    lines = (work_dir / "graph.mf").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("export BATCH_OPTIONS = "):
            batch = line.removeprefix("export BATCH_OPTIONS = ")
        elif line and not line.startswith(("#", "\t")):
            outfile, _, inputs = line.partition(": ")
            words = inputs.split()  # TEARDOWN's come from a set: the command is not always first
            command = next(word for word in words if not word.endswith(".out"))
            prereq_outfiles = [word for word in words if word.endswith(".out")]
            wrapper = Path(lines[number + 1].split()[0])
            graph[_job_key(outfile)] = {
                "prereqs": [_job_key(prereq) for prereq in prereq_outfiles],
                **_batch_fields(batch),
                **_wrapper_fields(wrapper, command),
            }
    return graph


def obsflow_graph(jobs: list[PlannedJob]) -> Graph:
    """Our plan in the same form, naming files by base name as hera_opm's makeflow does."""
    graph: Graph = {}
    for job in jobs:
        key = (job.action, job.primary_file and os.path.basename(job.primary_file))
        assert key not in graph, f"job {key} planned twice"
        graph[key] = {
            "prereqs": [(action, primary and os.path.basename(primary)) for action, primary in job.prereqs],
            "mem_mb": job.mem_mb,
            "ncpu": job.ncpu,
            "queue": job.queue,
            "extra": shlex.split(job.extra_batch_options or ""),
            "timeout": job.timeout,
            "working_dir": job.working_dir,
            "args": list(job.args),
        }
    return graph


def _without_deliberate_differences(graph: Graph) -> Graph:
    # TEARDOWN: hera_opm runs it with the last per-file job's args (not copied) and lists its
    # prereqs through a set (order meaningless).
    teardown = graph.get(("TEARDOWN", None))
    if teardown is not None:
        teardown.pop("args", None)
        teardown["prereqs"] = sorted(teardown["prereqs"], key=str)
    return graph


@pytest.mark.parametrize("count", FILE_COUNTS)
@pytest.mark.parametrize("config", SAMPLE_CONFIGS + OUR_CONFIGS, ids=lambda path: path.stem)
def test_plan_matches_hera_opm(config: Path, count: int, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    files = [str(data_dir / name) for name in hera_names(count)]
    for path in files:
        Path(path).touch()
    work_dir = tmp_path / "work"
    work_dir.mkdir()

    expected = _without_deliberate_differences(hera_opm_graph(config, files, work_dir))
    jobs = plan_workflow(load_workflow(config), files)
    actual = _without_deliberate_differences(obsflow_graph(jobs))

    assert list(actual) == list(expected), "jobs or their order differ"
    for key, job in expected.items():
        assert actual[key] == job, f"job {key} differs"


def test_sample_configs_are_all_there() -> None:
    assert len(SAMPLE_CONFIGS) == 9


def _touch_all(directory: Path, names: list[str]) -> list[str]:
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).touch()
    return [str(directory / name) for name in names]


MULTI_NIGHT_CONFIGS = SAMPLE_CONFIGS + OUR_CONFIGS


@pytest.mark.parametrize("config", MULTI_NIGHT_CONFIGS, ids=lambda path: path.stem)
def test_shuffled_files_give_hera_opms_graph_for_the_sorted_list(config: Path, tmp_path: Path) -> None:
    files = _touch_all(tmp_path / "data", hera_names(23))
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    shuffled = files[1::2][::-1] + files[0::2]

    expected = _without_deliberate_differences(hera_opm_graph(config, files, work_dir))
    actual = _without_deliberate_differences(obsflow_graph(plan_workflow(load_workflow(config), shuffled)))

    assert actual == expected
    assert list(actual) == list(expected)


@pytest.mark.parametrize("config", MULTI_NIGHT_CONFIGS, ids=lambda path: path.stem)
def test_each_night_is_planned_as_hera_opm_plans_it_alone(config: Path, tmp_path: Path) -> None:
    nights = [hera_names(7, 2459122.30000), hera_names(10, 2459123.29000), hera_names(2, 2459123.60000)]
    paths = [_touch_all(tmp_path / "data", names) for names in nights]
    expected: Graph = {}
    for number, night in enumerate(paths):
        work_dir = tmp_path / f"work{number}"
        work_dir.mkdir()
        expected.update(
            (key, job) for key, job in hera_opm_graph(config, night, work_dir).items() if key[1] is not None
        )
    everything = [path for night in paths for path in night]
    actual = obsflow_graph(plan_workflow(load_workflow(config), everything[::-1]))

    per_file = {key: job for key, job in actual.items() if key[1] is not None}
    assert list(per_file) == list(expected)
    assert per_file == expected
    teardown = actual.get(("TEARDOWN", None))
    if teardown is not None:
        last_action = load_workflow(config).per_file_actions[-1].name
        assert teardown["prereqs"] == [key for key in per_file if key[0] == last_action]
        assert teardown["args"] == list(load_workflow(config).actions[-1].args_template)


def _random_chunking(rng: random.Random) -> str:
    lines = []
    for key, choices in (
        ("chunk_size", [None, 1, 2, 3, 4, 5, 7, "'all'"]),
        ("stride_length", [None, 1, 2, 3, 4, 6, "'all'"]),
        ("prereq_chunk_size", [None, 1, 2, 3, 5, "'all'"]),
        ("time_centered", [None, "true", "false"]),
        ("collect_stragglers", [None, "true", "false"]),
    ):
        value = rng.choice(choices)
        if value is not None:
            lines.append(f"{key} = {value}")
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(60))
def test_random_chunking_matches_hera_opm(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    config = tmp_path / "random.toml"
    config.write_text(
        '[Options]\nmakeflow_type = "analysis"\npath_to_do_scripts = "/s"\nbase_mem = 1000\n'
        '[WorkFlow]\nactions = ["A", "B", "C"]\n'
        f'[A]\nargs = ["{{basename}}", "{{obsid_list}}"]\n{_random_chunking(rng)}\n'
        f'[B]\nprereqs = "A"\nargs = ["{{prev_basename}}", "{{obsid_list}}"]\n{_random_chunking(rng)}\n'
        f'[C]\nprereqs = ["B", "A"]\nargs = ["{{next_basename}}", "{{obsid_list}}"]\n{_random_chunking(rng)}\n'
    )
    files = _touch_all(tmp_path / "data", hera_names(rng.randint(1, 25)))
    work_dir = tmp_path / "work"
    work_dir.mkdir()

    expected = hera_opm_graph(config, files, work_dir)
    actual = obsflow_graph(plan_workflow(load_workflow(config), files))

    assert list(actual) == list(expected), config.read_text()
    assert actual == expected, config.read_text()
