"""What a workflow config may make the scheduler run and read: scripts only from script roots, inputs only from
input roots, batch options only from an allowlist.

A config names programs its jobs execute: `path_to_do_scripts/do_<ACTION>.sh`, `source_script` (sourced),
`conda_env` (`conda activate` of a path runs the activation scripts under it). Each must resolve, every
component and symbolic link followed (realpath), beneath one of the directories an administrator listed in
`[services.scheduler] script_roots`; with none listed, nothing runs. Input files and `obsflow_input_dir` must
resolve beneath a store root or `[services.scheduler] input_roots`. This is checked when a workflow is
registered or a run is planned (a 400 naming the path and the setting) and again when each job is submitted
(its attempt is refused), because the filesystem may have changed in between.

The paths handed to the job are those of the config (a do-script that is a link to another file in a root
still sees its own name as $0); that is safe because script roots are writable by administrators only (the
start-up checks refuse a root that the jobs' user, or everyone, can write to, and one that overlaps a store).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from services.scheduler.backends.batch_options import BatchOptionNotAllowed, check_batch_options
from services.scheduler.workflow import WorkflowConfig, WorkflowConfigError, WorkflowOptions

SCRIPT_ROOTS = "[services.scheduler] script_roots"
INPUT_ROOTS = "[services.scheduler] input_roots"
_CONDA_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


class PolicyRefusal(WorkflowConfigError):
    """A config that names a program outside the script roots (or when none are configured)."""

    code = "script_not_allowed"


class InputRefusal(PolicyRefusal):
    """An input file or obsflow_input_dir outside the input roots."""

    code = "input_not_allowed"


class BatchOptionRefusal(PolicyRefusal):
    """An extra_batch_options entry that is not on the allowlist."""

    code = "batch_option_not_allowed"


@dataclass(frozen=True)
class Programs:
    """What one job executes, each checked beneath a script root (as the config spells them)."""

    do_script: Path
    source_script: str | None
    conda_env: str | None


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False  # not there (yet): nothing to follow


def beneath(path: str, roots: Sequence[Path]) -> bool:
    """Whether the real location of `path` is one of `roots` or inside one (both fully resolved)."""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip("/") + "/"):
            return True
    return False


@dataclass(frozen=True)
class PathPolicy:
    """The directories programs and inputs may come from."""

    script_roots: tuple[Path, ...]
    input_roots: tuple[Path, ...]

    def check_config(self, config: WorkflowConfig, backend: str, input_dir: str | None) -> None:
        """Refuse a config whose jobs would run or read anything outside the roots (see the module docstring)."""
        for action in config.actions:
            self.programs(config.options, action.name)
            self.batch_options(backend, action.name, action.extra_batch_options)
        if input_dir is not None:
            self.input_path(input_dir, "obsflow_input_dir")

    def programs(self, options: WorkflowOptions, action: str) -> Programs:
        """The do-script, source_script and conda_env of `action`'s jobs, each checked beneath a script root."""
        scripts = self.scripts_directory(options.path_to_do_scripts)
        self._script(scripts, "path_to_do_scripts", directory=True)
        do_script = os.path.join(scripts, f"do_{action}.sh")
        self._script(do_script, f"the do-script of {action}", directory=False)
        if options.source_script:
            self._script(options.source_script, "source_script", directory=False)
        if options.conda_env and not _CONDA_NAME.match(options.conda_env):
            # Not a plain environment name: a path whose activation scripts `conda activate` would run.
            self._script(options.conda_env, "conda_env", directory=True)
        return Programs(Path(do_script), options.source_script, options.conda_env)

    def environment(self, options: WorkflowOptions) -> Programs | None:
        """What provenance runs (source_script, conda_env, git in path_to_do_scripts), checked; None if refused."""
        scripts = self.scripts_directory(options.path_to_do_scripts)
        try:
            self._script(scripts, "path_to_do_scripts", directory=True)
            if options.source_script:
                self._script(options.source_script, "source_script", directory=False)
            if options.conda_env and not _CONDA_NAME.match(options.conda_env):
                self._script(options.conda_env, "conda_env", directory=True)
        except PolicyRefusal:
            return None
        return Programs(Path(scripts), options.source_script, options.conda_env)

    def scripts_directory(self, path_to_do_scripts: str) -> str:
        """Where `path_to_do_scripts` is: an absolute path as written; a relative one (without `..`) beneath the first
        script root that has it, so a workflow names its scripts the same way at every site (hera_opm reads it
        relative to where it runs: run it from the script root to get the same). Checked by `_script` as usual."""
        path = path_to_do_scripts
        if path.startswith("~") or os.path.isabs(path) or not path or ".." in PurePosixPath(path).parts:
            return path  # absolute as written, or refused by _script with the usual message
        for root in self.script_roots:
            candidate = os.path.normpath(os.path.join(root, path))
            if os.path.isdir(candidate):
                return candidate
        return path

    def batch_options(self, backend: str, action: str, text: str | None) -> None:
        """Refuse extra_batch_options that are not on the allowlist of `backend`."""
        try:
            check_batch_options(backend, text)
        except BatchOptionNotAllowed as e:
            raise BatchOptionRefusal(f"extra_batch_options of [{action}] ({text!r}): {e}") from e

    def inputs(self, files: Sequence[str], input_dir: str | None) -> list[str]:
        """The run's input paths: names joined to `input_dir` when set; every path beneath an input root."""
        if input_dir is not None:
            self.input_path(input_dir, "obsflow_input_dir")
        resolved = []
        directories: dict[str, bool] = {}  # a night's files share a directory: resolve it once, lstat each file
        for name in files:
            if "\0" in name or ".." in PurePosixPath(name).parts:
                raise InputRefusal(
                    f"input {name!r} contains '..' (or a NUL): give a file name, or its absolute path beneath an "
                    f"input root"
                )
            if not os.path.isabs(name) and input_dir is None:
                resolved.append(name)  # a bare name the task scripts look up themselves
                continue
            path = os.path.normpath(name if os.path.isabs(name) else os.path.join(input_dir or "", name))
            parent = os.path.dirname(path)
            if parent not in directories:
                directories[parent] = beneath(parent, self.input_roots)
            if not directories[parent] or _is_link(path):
                self.input_path(path, "input")  # refuses, or follows the link to check where it leads
            resolved.append(path)
        return resolved

    def input_path(self, path: str, what: str) -> None:
        """Refuse `path` unless it is absolute and lies beneath an input root (the stores' roots count)."""
        roots = ", ".join(str(r) for r in self.input_roots) or "none"
        if not os.path.isabs(path):
            raise InputRefusal(f"{what} {path!r} must be an absolute path beneath an input root ({roots})")
        if not beneath(path, self.input_roots):
            raise InputRefusal(
                f"{what} {path} is not beneath an input root (the stores' roots and {INPUT_ROOTS}: {roots}); "
                "use a file there, or ask an administrator to add its directory to input_roots"
            )

    def _script(self, path: str, what: str, *, directory: bool) -> None:
        roots = ", ".join(str(r) for r in self.script_roots)
        if not self.script_roots:
            raise PolicyRefusal(
                f"{what} {path} cannot run: no script roots are configured. An administrator sets "
                f'{SCRIPT_ROOTS} = ["/opt/pipelines"] to the directories that hold approved do-scripts and setup '
                "scripts; until then no workflow runs"
            )
        if path.startswith("~") or not os.path.isabs(path):
            raise PolicyRefusal(
                f"{what} {path!r} must be an absolute path beneath a script root, or a directory relative to one, "
                f"without '..' ({roots})"
            )
        try:
            real = os.path.realpath(path, strict=True)
        except OSError:
            raise PolicyRefusal(
                f"{what} {path} does not exist (or cannot be resolved); put it beneath a script root ({roots})"
            ) from None
        if not beneath(real, self.script_roots):
            via = f" (it leads, through a symbolic link, to {real})" if real != os.path.normpath(path) else ""
            raise PolicyRefusal(
                f"{what} {path} is not beneath a script root{via}: only programs in {SCRIPT_ROOTS} ({roots}) run; "
                "ask an administrator to put it there"
            )
        if os.path.isdir(real) != directory:
            raise PolicyRefusal(f"{what} {path} is not a {'directory' if directory else 'file'}")
