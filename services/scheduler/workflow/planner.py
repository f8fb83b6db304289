"""plan_workflow: the job graph of a workflow over a list of files, in linear time."""

from __future__ import annotations

from collections.abc import Sequence

from services.scheduler.workflow.arguments import render_args
from services.scheduler.workflow.model import SETUP, ActionSpec, JobKey, PlannedJob, WorkflowConfig
from services.scheduler.workflow.observations import DEFAULT_NIGHT_GAP_DAYS, Observation, group_into_nights
from services.scheduler.workflow.partition import partition_night, prereq_primaries, prereq_reach


def plan_workflow(
    config: WorkflowConfig, files: Sequence[str], night_gap_days: float = DEFAULT_NIGHT_GAP_DAYS
) -> list[PlannedJob]:
    """Plan every job of the workflow over `files` (any order, one or more nights), in hera_opm's order.

    Jobs come as SETUP, then for each file in time order each action that has a chunk led by that
    file, then TEARDOWN. Chunks and neighbours never cross a gap of more than `night_gap_days`.
    """
    nights = group_into_nights(files, night_gap_days)
    jobs: list[PlannedJob] = []
    if config.has_setup:
        jobs.append(_edge_job(config, config.actions[0], nights[0][0], ()))
    for night in nights:
        jobs.extend(_plan_night(config, night))
    if config.has_teardown:
        last_action = config.per_file_actions[-1].name
        waits_for = tuple(job.key for job in jobs if job.action == last_action)
        jobs.append(_edge_job(config, config.actions[-1], nights[-1][-1], waits_for))
    return jobs


def _edge_job(
    config: WorkflowConfig, action: ActionSpec, beside: Observation, prereqs: tuple[JobKey, ...]
) -> PlannedJob:
    # SETUP and TEARDOWN get their own args verbatim: hera_opm substitutes nothing into them.
    return PlannedJob(
        action=action.name,
        primary_file=None,
        files=(),
        args=action.args_template,
        prereqs=prereqs,
        queue=action.queue,
        mem_mb=action.mem_mb,
        ncpu=action.ncpu,
        timeout=config.options.timeout,
        extra_batch_options=action.extra_batch_options,
        working_dir=beside.directory,
    )


def _plan_night(config: WorkflowConfig, night: list[Observation]) -> list[PlannedJob]:
    actions = config.per_file_actions
    length = len(night)
    paths = [observation.path for observation in night]
    layouts = {action.name: partition_night(action, length) for action in actions}
    reaches = {action.name: prereq_reach(action, length) for action in actions}
    after_setup: tuple[JobKey, ...] = ((SETUP, None),) if config.has_setup else ()
    timeout = config.options.timeout
    jobs: list[PlannedJob] = []
    for index, observation in enumerate(night):
        for action in actions:
            chunk = layouts[action.name].chunk_by_primary.get(index)
            if chunk is None:
                continue
            prereqs = list(after_setup)
            for prereq in action.prereqs:
                primaries = prereq_primaries(action, index, length, reaches[action.name], layouts[prereq])
                prereqs.extend((prereq, paths[primary]) for primary in primaries)
            jobs.append(
                PlannedJob(
                    action=action.name,
                    primary_file=observation.path,
                    files=tuple(paths[chunk.start : chunk.stop]),
                    args=render_args(action.args_template, night, index, chunk.start, chunk.stop),
                    prereqs=tuple(prereqs),
                    queue=action.queue,
                    mem_mb=action.mem_mb,
                    ncpu=action.ncpu,
                    timeout=timeout,
                    extra_batch_options=action.extra_batch_options,
                    working_dir=observation.directory,
                )
            )
    return jobs
