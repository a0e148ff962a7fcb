"""``onlineca manpage``: the man page ``onlineca(1)`` in roff, generated from the command tree.

It walks every group and command of the root (the same objects ``--help`` prints), so the page
cannot drift from the code: each command gets a subsection with its usage, its help text and its
options.  It writes to stdout or ``--out FILE``; it reads no configuration and starts nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import click

from onlineca import __version__


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote that would start a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line for line in text.splitlines())


def walk(command: click.Command, ctx: click.Context, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command, click.Context]]:
    """Every command under ``command`` (itself first), with its name path and a context for it."""
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from walk(sub, click.Context(sub, info_name=name, parent=ctx), (*path, name))


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    lines: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        lines += [".TP", f"\\fB{_roff(names)}\\fR", _roff(help_text or "")]
    return lines


def render(root: click.Command) -> str:
    """The whole page."""
    ctx = click.Context(root, info_name="onlineca")
    today = dt.date.today().isoformat()
    out = [
        f'.TH ONLINECA 1 "{today}" "onlineca {__version__}" "User Commands"',
        ".SH NAME",
        "onlineca \\- device certificates enrolled and renewed through CAPF, an EST RA and a /certsrv CA",
        ".SH SYNOPSIS",
        "\\fBonlineca\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _roff(root.help or ""),
        ".SH GLOBAL OPTIONS",
        *_options(root, ctx),
        ".SH COMMANDS",
    ]
    for path, command, sub_ctx in walk(root, ctx):
        if not path:
            continue
        usage = " ".join(command.collect_usage_pieces(sub_ctx))
        out += [f'.SS "onlineca {" ".join(path)}"', f"\\fBonlineca {_roff(' '.join(path))}\\fR {_roff(usage)}",
                ".PP", _roff(command.help or command.short_help or "")]
        out += _options(command, sub_ctx)
    out += [
        ".SH ENVIRONMENT",
        ".TP", "\\fBONLINECA_CONFIG\\fR", "The configuration file, when \\-\\-config is not given.",
        ".TP", "\\fBONLINECA_DATA_DIR\\fR", "The data dir, when \\-\\-data\\-dir is not given.",
        ".TP", "\\fBONLINECA_\\fISECTION\\fB_\\fIKEY\\fR",
        "Overrides [section] key of the configuration (secrets belong here, not in the file).",
        ".SH FILES",
        ".TP", "\\fI/etc/onlineca/onlineca.toml\\fR", "The system-wide configuration (last in the search path).",
        ".TP", "\\fI/var/lib/onlineca\\fR", "The data dir of the systemd units (StateDirectory).",
        ".SH EXIT STATUS",
        "0 on success, 1 on a failure or a finding, 2 on bad usage.",
        ".SH SEE ALSO",
        "\\fBsystemd.service\\fR(5), \\fBlogrotate\\fR(8); docs/operations.md in the source distribution.",
    ]
    return "\n".join(out) + "\n"


@click.command("manpage")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the page here (e.g. onlineca.1) instead of to stdout.")
@click.pass_context
def manpage(ctx: click.Context, out: Path | None) -> None:
    """Print the man page onlineca(1), generated from the commands (roff; 'man -l onlineca.1')."""
    root = ctx.find_root().command
    page = render(root)
    if out is None:
        click.echo(page, nl=False)
    else:
        out.write_text(page, encoding="utf-8")
        click.echo(f"wrote {out.absolute()}", err=True)
