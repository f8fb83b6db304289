"""load_workflow reads hera_opm configs unchanged and refuses those that cannot work, saying why."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from services.scheduler.workflow import WorkflowConfigError, load_workflow

FIELD = Path(os.environ.get("OBSFLOW_FIELD_DIR", Path(__file__).resolve().parents[3] / "shared" / "field"))
SAMPLES = FIELD / "hera_opm" / "sample_config"
BAD = FIELD / "hera_opm" / "bad_configs"

MINIMAL = """
[Options]
makeflow_type = "analysis"
path_to_do_scripts = "/scripts"
base_mem = 1000
{options}
[WorkFlow]
actions = {actions}
{sections}
"""


def config_text(actions: str = '["A"]', sections: str = '[A]\nargs = "{basename}"', options: str = "") -> str:
    return MINIMAL.format(actions=actions, sections=sections, options=options)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("bad_example.toml", "unknown makeflow_type 'bad_type'"),
        ("bad_example_obsid_list.toml", "{obsid_list} must be the last argument for action ANT_METRICS"),
        ("bad_missing_prereq.toml", "prereq FIRSTCAL_METRICS for action OMNICAL is not in actions"),
        ("bad_setup_example.toml", "SETUP must be the first entry"),
        ("bad_teardown_example.toml", "TEARDOWN must be the last entry"),
    ],
)
def test_bad_configs_are_refused_naming_the_problem(name: str, problem: str) -> None:
    with pytest.raises(WorkflowConfigError) as refused:
        load_workflow(BAD / name)
    assert problem in str(refused.value)
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.toml")), ids=lambda path: path.stem)
def test_every_sample_config_loads_with_provenance(path: Path) -> None:
    config = load_workflow(path)
    assert config.source_text == path.read_text()
    assert config.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert config.source_path == str(path)
    assert config.per_file_actions


def test_text_and_path_give_the_same_config() -> None:
    path = SAMPLES / "nrao_rtp_chunk_size.toml"
    assert load_workflow(path.read_text()) == dataclasses.replace(load_workflow(path), source_path=None)


def test_options_and_per_action_settings_follow_hera_opm() -> None:
    config = load_workflow(
        config_text(
            actions='["setup", "A", "B", "TEARDOWN"]',
            options='base_cpu = 2\ndefault_queue = "q"\ntimeout = 60\nbatch_system = "PBS"\nmandc_report = 1\n'
            'mail_user = "me@example.org"\nlib = "libconn"\nbig = 9000',
            sections='[A]\nargs = ["${Options:lib}", "{basename}"]\nmem = "${Options:big}"\nqueue = "fast"\n'
            '[B]\nprereqs = "A"\nchunk_size = "all"\nstride_length = "3"\nprereq_chunk_size = 2\n'
            'time_centered = false\ncollect_stragglers = true\nncpu = 8\nextra_batch_options = "--gres=gpu"\n'
            'args = ["{basename}", "{obsid_list}"]',
        )
    )
    options = config.options
    assert (options.base_cpu, options.default_queue, options.timeout) == (2, "q", "60")
    assert (options.batch_system, options.mandc_report, options.mail_user) == ("pbs", True, "me@example.org")
    setup, a, b, teardown = config.actions
    assert (setup.name, setup.args_template, setup.queue, setup.mem_mb) == ("SETUP", (), "q", 1000)
    assert (a.args_template, a.mem_mb, a.queue, a.ncpu) == (("libconn", "{basename}"), 9000, "fast", 2)
    assert (b.chunk_size, b.stride_length, b.prereq_chunk_size) == ("all", 3, 2)
    assert (b.time_centered, b.collect_stragglers, b.ncpu, b.extra_batch_options) == (False, True, 8, "--gres=gpu")
    assert teardown.name == "TEARDOWN"


def test_an_action_without_args_gets_the_word_none_like_hera_opm() -> None:
    config = load_workflow(config_text(sections=""))
    assert config.actions[0].args_template == ("None",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not toml [", "not valid TOML"),
        (config_text().replace('makeflow_type = "analysis"', 'makeflow_type = "lstbin"'), "lstbin"),
        (config_text().replace('makeflow_type = "analysis"', ""), '"makeflow_type" under [Options]'),
        (config_text().replace("base_mem = 1000", ""), '"base_mem" under [Options]'),
        (config_text().replace("base_mem = 1000", 'base_mem = "lots"'), "base_mem under [Options] must be"),
        (config_text().replace('path_to_do_scripts = "/scripts"', ""), '"path_to_do_scripts"'),
        (config_text(actions="[]"), "at least one action"),
        (config_text(actions='["A", "a"]'), "lists A more than once"),
        (config_text(options='batch_system = "lsf"'), "unknown batch_system 'lsf'"),
        (config_text(sections='[A]\nargs = "${Options:nothing}"'), "option 'nothing' under [Options]"),
        (config_text(sections='[A]\nargs = "${Options}"'), "exactly one colon"),
        (config_text(sections="[A]\nchunk_size = 0\nargs = 'x'"), "chunk_size of [A] must be at least 1"),
        (
            config_text(sections="[A]\nchunk_size = 'ALL'\nargs = 'x'"),
            'chunk_size of [A] must be a whole number or "all"',
        ),
        (config_text(sections="[A]\nchunk_size = 2"), "sets chunk_size, so [A] needs args"),
        (config_text(sections="[A]\ntime_centered = 'true'\nargs = 'x'"), "time_centered of [A] must be true or false"),
        (config_text(sections="[A]\nmem = 1.5\nargs = 'x'"), "mem of [A] must be a whole number"),
        (config_text(actions='["A", "B"]', sections="[A]\nprereqs = 'B'\nargs = 'x'"), "comes after it"),
        (config_text(actions='["SETUP", "A"]', sections="[A]\nprereqs = 'SETUP'\nargs = 'x'"), "SETUP is implied"),
        (config_text(actions='["SETUP", "TEARDOWN"]', sections=""), "at least one action besides"),
        (config_text(sections='[A]\nargs = "it\'s"'), "cannot be split like a shell"),
    ],
)
def test_configs_that_cannot_work_are_refused(text: str, problem: str) -> None:
    with pytest.raises(WorkflowConfigError) as refused:
        load_workflow(text)
    assert problem in str(refused.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowConfigError, match="cannot read workflow config"):
        load_workflow(tmp_path / "absent.toml")
