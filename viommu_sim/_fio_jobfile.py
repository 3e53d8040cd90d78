"""fio job files for ``viommu-sim run job.fio``: fio's INI format, as fio's init.c reads it.

* ``[name]`` starts a job section named ``name`` (fio's ``name``); ``[global]`` starts a global
  section, whose options apply to every job section *after* it (a later ``[global]`` adds to them);
* ``key=value`` or a bare ``key`` (a flag, ``time_based``) per line; spaces around ``=`` and at the
  ends are ignored; keys are ``JOB_OPTIONS``' names (dashes or underscores, fio's ``readwrite``);
* lines starting with ``;`` or ``#`` are comments, as are empty lines;
* a job section's options override the global ones; options given on ``viommu-sim run``'s command
  line are the defaults beneath both, as fio's are (fio parses its command line into the default
  job that every job of the file starts from, and the file's options override them).

The file is read bounded (a regular file, at most 1 MiB, UTF-8); anything it cannot take (an option
outside a section, an unknown key, a file without a job section, more than ``MAX_SECTIONS``) is a
``UsageError`` of one line naming the file and line.
"""

from __future__ import annotations

import attrs

from ._job import JOB_OPTIONS
from ._options import UsageError, read_bounded

#: the largest job file read
MAX_JOBFILE_BYTES = 1 << 20
#: the most job sections one file may hold (each runs side by side on one simulated machine)
MAX_SECTIONS = 64

#: every key a job file may use, by its spellings (fio's aliases and dashes too)
_KEYS = {spelling: o.name for o in JOB_OPTIONS
         for spelling in (o.name, o.name.replace("_", "-"), *o.aliases)}


@attrs.frozen(kw_only=True)
class JobSection:
    """One job section: its name and options (its own and the global ones before it), as given."""

    name: str
    #: the options of the [global] sections before it
    global_options: dict[str, str]
    #: its own options
    options: dict[str, str]


@attrs.frozen(kw_only=True)
class JobFile:
    sections: tuple[JobSection, ...]
    #: every [global] section's options, in order (fio's JSON ``"global options"``)
    global_options: dict[str, str]


def parse_jobfile(text: str, path: str) -> JobFile:
    """The job sections of a job file's ``text`` (``path`` names it in errors)."""
    sections: list[JobSection] = []
    glob: dict[str, str] = {}
    current: tuple[str, dict[str, str]] | None = None
    in_global = False

    def close() -> None:
        if current is not None:
            sections.append(JobSection(name=current[0], global_options=dict(glob), options=current[1]))

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        where = f"{path}:{lineno}"
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise UsageError(f"{where}: invalid section header {line[:60]!r} (e.g. [global], [job1])")
            close()
            current = None
            name = line[1:-1].strip()
            in_global = name == "global"
            if not in_global:
                if len(sections) >= MAX_SECTIONS:
                    raise UsageError(f"{where}: more than {MAX_SECTIONS} job sections")
                current = (name, {})
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        option = _KEYS.get(key)
        if option is None:
            raise UsageError(f"{where}: unknown option {key[:60]!r} (known: {', '.join(o.name for o in JOB_OPTIONS)})")
        if eq and not value:
            raise UsageError(f"{where}: option {key!r} has no value")
        if in_global:
            glob[option] = value
        elif current is not None:
            current[1][option] = value
        else:
            raise UsageError(f"{where}: option {key!r} outside of a [section]")
    close()
    if not sections:
        raise UsageError(f"{path}: no job section (a [name] section besides [global])")
    return JobFile(sections=tuple(sections), global_options=glob)


def load_jobfile(path: str) -> JobFile:
    """A job file read bounded; every way it is unreadable is one ``UsageError`` line naming it."""
    try:
        data = read_bounded(path, MAX_JOBFILE_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read job file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    return parse_jobfile(text, path)
