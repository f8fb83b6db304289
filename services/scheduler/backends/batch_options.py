"""Which `extra_batch_options` obsflow passes on to sbatch and qsub: resource and placement requests only.

An option that names a file, a directory, a user, a script or the job's environment (sbatch `--output`,
`--chdir`, `--uid`, `--export`; qsub `-o`, `-W stageout=`, `-l prologue=`, `-v`, `-S`) would let whoever writes
a workflow config make the batch system, acting as the scheduler's user, read, write or run something of
their choosing. So this is an allowlist (default deny): options that are not known to be harmless are refused.
"""

from __future__ import annotations

import shlex

# sbatch: option -> whether it takes a value. Flags may still be written `--name=value` (--exclusive=user).
_SLURM_VALUE = {
    "account", "begin", "comment", "constraint", "cluster-constraint", "core-spec", "cores-per-socket",
    "cpu-freq", "cpus-per-gpu", "deadline", "delay-boot", "dependency", "exclude", "gpu-bind", "gpus",
    "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres", "gres-flags", "hint", "licenses", "mail-type",
    "mail-user", "mcs-label", "mem-per-cpu", "mem-per-gpu", "mincpus", "nodelist", "nodes", "ntasks-per-core",
    "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "partition", "prefer", "priority", "qos",
    "reservation", "signal", "sockets-per-node", "switches", "thread-spec", "threads-per-core", "time-min", "tmp",
    "wckey",
}
_SLURM_FLAG = {
    "contiguous", "exclusive", "nice", "no-requeue", "overcommit", "oversubscribe", "requeue", "spread-job",
    "use-min-nodes",
}
_SLURM_SHORT = {"A": "account", "b": "begin", "C": "constraint", "d": "dependency", "G": "gpus", "L": "licenses",
                "N": "nodes", "p": "partition", "q": "qos", "S": "core-spec", "w": "nodelist", "x": "exclude",
                "O": "overcommit", "s": "oversubscribe"}
# Slurm reads a node list from a file when the value holds a '/'.
_SLURM_NO_PATH = {"nodelist", "exclude"}

# qsub (TORQUE/PBS): options that take a value; -l resources are checked key by key.
_PBS_VALUE = {"A", "a", "l", "m", "M", "p", "q", "r"}
_PBS_RESOURCES = {
    "arch", "cput", "feature", "file", "gpus", "gres", "host", "mem", "naccesspolicy", "ncpus", "nice", "nodes",
    "other", "pcput", "pmem", "procs", "pvmem", "qos", "software", "vmem", "walltime",
}


class BatchOptionNotAllowed(ValueError):
    """An extra batch option obsflow does not pass on; the message names it and what is allowed."""


def check_batch_options(backend: str, text: str | None) -> None:
    """Refuse `text` (an action's extra_batch_options) unless every option in it is a harmless request."""
    if not text or backend not in ("slurm", "pbs"):
        return  # the local backend ignores batch options
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise BatchOptionNotAllowed(f"cannot be split like a shell would: {e}") from e
    if backend == "slurm":
        _check_slurm(tokens)
    else:
        _check_pbs(tokens)


def _refuse(option: str, backend: str, allowed: str) -> BatchOptionNotAllowed:
    return BatchOptionNotAllowed(
        f"{option!r} is not passed to {backend}: obsflow only passes resource and placement requests "
        f"({allowed}); options naming files, directories, users, scripts or environment are refused"
    )


def _check_slurm(tokens: list[str]) -> None:
    allowed = "e.g. --account, --gres, --constraint, --exclusive, --qos; see docs/scheduler.md"
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
        elif token.startswith("-") and len(token) > 1 and token[1] in _SLURM_SHORT:
            name, value = _SLURM_SHORT[token[1]], token[2:]
            has_value = "=" if value else ""
        else:
            raise _refuse(token, "sbatch", allowed)
        if name in _SLURM_VALUE:
            if not has_value:
                if i + 1 >= len(tokens):
                    raise BatchOptionNotAllowed(f"{token!r} needs a value")
                i += 1
                value = tokens[i]
            if name in _SLURM_NO_PATH and "/" in value:
                raise _refuse(f"{token} {value}", "sbatch", "a node list, never a file of node names")
        elif name not in _SLURM_FLAG:
            raise _refuse(token, "sbatch", allowed)
        i += 1


def _check_pbs(tokens: list[str]) -> None:
    allowed = "-A, -a, -l with resource requests, -m, -M, -p, -q, -r; see docs/scheduler.md"
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-") or len(token) < 2 or token[1] not in _PBS_VALUE:
            raise _refuse(token, "qsub", allowed)
        value = token[2:]
        if not value:
            if i + 1 >= len(tokens):
                raise BatchOptionNotAllowed(f"{token!r} needs a value")
            i += 1
            value = tokens[i]
        if token[1] == "l":
            for request in value.split(","):
                key = request.split("=", 1)[0].strip()
                if key not in _PBS_RESOURCES:
                    raise _refuse(f"-l {request}", "qsub", "resources such as nodes, mem, walltime, gpus")
        i += 1
