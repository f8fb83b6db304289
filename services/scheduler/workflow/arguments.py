"""Filling hera_opm's mini-language ({basename}, {prev_basename}, {next_basename}, {obsid_list}) into args."""

from __future__ import annotations

from services.scheduler.workflow.observations import Observation


def render_args(
    template: tuple[str, ...], night: list[Observation], index: int, start: int, stop: int
) -> tuple[str, ...]:
    """The args a task script receives for the job led by night[index] on the chunk night[start:stop].

    The template was split like a shell splits a command line; file names carry no whitespace or
    quotes, so substituting into each word gives the words bash would give. {obsid_list} becomes one
    word per file (absolute paths), as in hera_opm's wrapper scripts.
    """
    rendered: list[str] = []
    for word in template:
        if "{" not in word:
            rendered.append(word)
            continue
        word = word.replace("{basename}", night[index].name)
        if "{prev_basename}" in word:
            word = word.replace("{prev_basename}", night[index - 1].name if index > 0 else "None")
        if "{next_basename}" in word:
            word = word.replace("{next_basename}", night[index + 1].name if index + 1 < len(night) else "None")
        if "{obsid_list}" in word:
            paths = " ".join(observation.abspath for observation in night[start:stop])
            rendered.extend(word.replace("{obsid_list}", paths).split())
        else:
            rendered.append(word)
    return tuple(rendered)
