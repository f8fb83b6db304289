"""load_workflow: read a hera_opm 1.4.0 TOML workflow unchanged and check it the way hera_opm does."""

from __future__ import annotations

import hashlib
import shlex
import tomllib
from pathlib import Path
from typing import Any, cast

from services.scheduler.workflow import entries
from services.scheduler.workflow.entries import RawConfig, entry, optional_text, required_entry
from services.scheduler.workflow.errors import WorkflowConfigError
from services.scheduler.workflow.model import (
    SETUP,
    TEARDOWN,
    ActionSpec,
    Count,
    WorkflowConfig,
    WorkflowOptions,
)

_BATCH_SYSTEMS = ("slurm", "pbs", "htcondor")


def load_workflow(path_or_text: str | Path) -> WorkflowConfig:
    """Read a workflow from a TOML file path or TOML text; raise WorkflowConfigError if it cannot work."""
    text, source_path = _read_source(path_or_text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        where = source_path or "the workflow config"
        raise WorkflowConfigError(f"{where} is not valid TOML: {error}") from error
    options = _read_options(raw)
    actions = _read_actions(raw, options)
    return WorkflowConfig(
        options=options,
        actions=actions,
        source_text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        source_path=source_path,
    )


def _read_source(path_or_text: str | Path) -> tuple[str, str | None]:
    looks_like_path = isinstance(path_or_text, Path) or (
        "\n" not in path_or_text and "=" not in path_or_text and "[" not in path_or_text
    )
    if not looks_like_path:
        return str(path_or_text), None
    path = Path(path_or_text)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as error:
        raise WorkflowConfigError(f"cannot read workflow config {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise WorkflowConfigError(f"workflow config {path} is not UTF-8 text") from error


def _read_options(raw: RawConfig) -> WorkflowOptions:
    makeflow_type = required_entry(raw, "Options", "makeflow_type")
    if makeflow_type == "lstbin":
        raise WorkflowConfigError(
            'makeflow_type "lstbin" (LST binning with hera_cal) is not supported by obsflow; '
            'only "analysis" workflows can be planned. Build LST-binning makeflows with hera_opm.'
        )
    if makeflow_type != "analysis":
        raise WorkflowConfigError(
            f'unknown makeflow_type {makeflow_type!r} under [Options]; it must be "analysis" '
            '(or "lstbin", which obsflow does not support)'
        )
    path_to_do_scripts = required_entry(raw, "Options", "path_to_do_scripts")
    if not isinstance(path_to_do_scripts, str):
        raise WorkflowConfigError(f"path_to_do_scripts under [Options] must be text, not {path_to_do_scripts!r}")
    batch_system = str(entry(raw, "Options", "batch_system") or "slurm").lower()
    if batch_system not in _BATCH_SYSTEMS:
        raise WorkflowConfigError(
            f"unknown batch_system {batch_system!r} under [Options]; use one of {', '.join(_BATCH_SYSTEMS)}"
        )
    return WorkflowOptions(
        makeflow_type=makeflow_type,
        path_to_do_scripts=path_to_do_scripts,
        base_mem=entries.whole_number(required_entry(raw, "Options", "base_mem"), "base_mem under [Options]"),
        base_cpu=entries.optional_whole_number(entry(raw, "Options", "base_cpu"), "base_cpu under [Options]"),
        default_queue=optional_text(raw, "Options", "default_queue") or "hera",
        source_script=optional_text(raw, "Options", "source_script"),
        conda_env=optional_text(raw, "Options", "conda_env"),
        mail_user=optional_text(raw, "Options", "mail_user"),
        batch_system=batch_system,
        timeout=optional_text(raw, "Options", "timeout"),
        mandc_report=bool(entry(raw, "Options", "mandc_report")),
    )


def _read_action_names(raw: RawConfig) -> list[str]:
    names = required_entry(raw, "WorkFlow", "actions")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise WorkflowConfigError("actions under [WorkFlow] must be a list of action names (text)")
    upper = [name.upper() for name in names]  # hera_opm upper-cases actions (and so their sections)
    duplicates = sorted({name for name in upper if upper.count(name) > 1})
    if duplicates:
        raise WorkflowConfigError(f"actions under [WorkFlow] lists {', '.join(duplicates)} more than once")
    if SETUP in upper and upper.index(SETUP) != 0:
        raise WorkflowConfigError("SETUP must be the first entry of actions under [WorkFlow]")
    if TEARDOWN in upper and upper.index(TEARDOWN) != len(upper) - 1:
        raise WorkflowConfigError("TEARDOWN must be the last entry of actions under [WorkFlow]")
    if not [name for name in upper if name not in (SETUP, TEARDOWN)]:
        raise WorkflowConfigError("actions under [WorkFlow] must name at least one action besides SETUP/TEARDOWN")
    return upper


def _read_actions(raw: RawConfig, options: WorkflowOptions) -> tuple[ActionSpec, ...]:
    names = _read_action_names(raw)
    actions = tuple(_read_action(raw, name, options) for name in names)
    for position, action in enumerate(actions):
        if action.is_per_file:
            _check_prereqs(action, names[:position], names)
    return actions


def _check_prereqs(action: ActionSpec, earlier: list[str], names: list[str]) -> None:
    for prereq in action.prereqs:
        if prereq not in names:
            raise WorkflowConfigError(
                f"prereq {prereq} for action {action.name} is not in actions under [WorkFlow]; "
                "add it to the workflow or remove the prereq"
            )
        if prereq in (SETUP, TEARDOWN):
            raise WorkflowConfigError(
                f"action {action.name} lists {prereq} as a prereq; SETUP is implied and TEARDOWN comes last, "
                "so remove it"
            )
        if prereq not in earlier:
            raise WorkflowConfigError(
                f"prereq {prereq} for action {action.name} comes after it in actions under [WorkFlow]; move it earlier"
            )


def _read_action(raw: RawConfig, name: str, options: WorkflowOptions) -> ActionSpec:
    chunk_size = _count(raw, name, "chunk_size")
    raw_args = entry(raw, name, "args")
    if chunk_size is not None:
        _check_obsid_list_last(name, raw_args)
    return ActionSpec(
        name=name,
        args_template=_args_template(name, raw_args),
        prereqs=_prereqs(raw, name),
        chunk_size=chunk_size,
        stride_length=_count(raw, name, "stride_length"),
        prereq_chunk_size=_count(raw, name, "prereq_chunk_size"),
        time_centered=entries.flag(entry(raw, name, "time_centered"), f"time_centered of [{name}]", True),
        collect_stragglers=entries.flag(
            entry(raw, name, "collect_stragglers"), f"collect_stragglers of [{name}]", False
        ),
        queue=optional_text(raw, name, "queue") or options.default_queue,
        mem_mb=entries.optional_whole_number(entry(raw, name, "mem"), f"mem of [{name}]") or options.base_mem,
        ncpu=entries.optional_whole_number(entry(raw, name, "ncpu"), f"ncpu of [{name}]") or options.base_cpu,
        extra_batch_options=optional_text(raw, name, "extra_batch_options"),
    )


def _count(raw: RawConfig, name: str, item: str) -> Count | None:
    return cast(Count | None, entries.count(entry(raw, name, item), f"{item} of [{name}]"))


def _check_obsid_list_last(name: str, raw_args: Any) -> None:
    if raw_args is None:
        raise WorkflowConfigError(f"action {name} sets chunk_size, so [{name}] needs args; add them")
    # hera_opm's check: a text args containing {obsid_list} always fails it; in a list, the
    # element "{obsid_list}" must be the last one.
    if isinstance(raw_args, list):
        misplaced = "{obsid_list}" in raw_args and raw_args.index("{obsid_list}") != len(raw_args) - 1
    else:
        misplaced = "{obsid_list}" in str(raw_args)
    if misplaced:
        raise WorkflowConfigError(
            f"{{obsid_list}} must be the last argument for action {name} because chunk_size is specified; "
            'write args as a list ending with "{obsid_list}"'
        )


def _args_template(name: str, raw_args: Any) -> tuple[str, ...]:
    if raw_args is None:
        # hera_opm passes the literal word None to a per-file action without args; nothing to SETUP/TEARDOWN.
        return () if name in (SETUP, TEARDOWN) else ("None",)
    elements = raw_args if isinstance(raw_args, list) else [raw_args]
    command_line = " ".join(str(element) for element in elements)
    try:
        return tuple(shlex.split(command_line))
    except ValueError as error:
        raise WorkflowConfigError(f"args of [{name}] cannot be split like a shell would: {error}") from error


def _prereqs(raw: RawConfig, name: str) -> tuple[str, ...]:
    value = entry(raw, name, "prereqs")
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(prereq, str) for prereq in values):
        raise WorkflowConfigError(f"prereqs of [{name}] must be an action name or a list of them")
    return tuple(values)
