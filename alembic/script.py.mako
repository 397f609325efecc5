<%doc>
  The checkout's revision template is the package's (ghostsync/migrations/script.py.mako), rendered
  with the same arguments: one template, wherever `alembic revision` or `alembic merge` runs.
  Follow-up revisions are best written with `ghostsync revision -m MESSAGE` (docs/FOLLOW-UP-REVISIONS.md).
</%doc><%
    from pathlib import Path
    from mako.template import Template
    import ghostsync.migrations as packaged
    template = Template(filename=str(Path(packaged.__file__).parent / "script.py.mako"))
%>${template.render(**context.kwargs)}
