"""Is the database stamped behind what it holds? (a mistaken ``alembic stamp`` to an old revision)

Status judges the catalogs against the declaration of the revision alembic_version records.
Stamped back by mistake, the database holds what a later revision declares and status would
judge it against the older declaration without a word (drift that is no edit, advice that
reinstalls the old objects). ``later_objects`` lists, for a revision, what each later revision
on the way to head installs differently (a function's text, a trigger's definition); an
installed object equal to one of those is the sign. ``newest_installed`` names the newest such
revision and its objects. ``verify-sql`` embeds ``later_objects`` per revision and applies the
same rule in SQL; the labels are built here once.
"""

from __future__ import annotations

from typing import Any

from ghostsync import chain


def later_objects(revision: str | None, script: Any) -> list[dict[str, Any]]:
    """What each revision after ``revision`` (up to head) installs anew, oldest first: a function's text or
    a trigger's definition that differs from what the revision before it declares (and from what
    ``revision`` declares): ``{"later", "kind" (function | trigger), "name", "table", "text", "label"}``."""
    if revision is None:
        return []
    ordered = [rev.revision for rev in chain.path_to(script, chain.head(script))]
    if revision not in ordered:
        return []
    here = chain.declared_at(revision, script)
    found: list[dict[str, Any]] = []
    before = here
    for later in ordered[ordered.index(revision) + 1:]:
        declared = chain.declared_at(later, script)
        for signature in declared.functions:
            body = declared.body(signature)
            if all(signature not in d.functions or d.body(signature) != body for d in (here, before)):
                found.append({"later": later, "kind": "function", "name": signature, "table": None, "text": body,
                              "label": f"function {signature}"})
        for name, trigger in declared.triggers.items():
            if all(name not in d.triggers or d.triggers[name].definition != trigger.definition for d in (here, before)):
                found.append({"later": later, "kind": "trigger", "name": name, "table": trigger.table,
                              "text": trigger.definition, "label": f"trigger {name} on {trigger.table}"})
        before = declared
    return found


def newest_installed(later: list[dict[str, Any]], installed_bodies: dict[str, str | None],
                   installed_triggers: dict[tuple[str, str], str]) -> tuple[str, str] | None:
    """(the newest later revision whose objects are installed, their labels), or None.

    ``installed_bodies``: signature -> prosrc (None: absent); ``installed_triggers``: (name, table) ->
    definition under an empty search_path."""
    matched = [o for o in later if (installed_bodies.get(o["name"]) == o["text"] if o["kind"] == "function"
                                    else installed_triggers.get((o["name"], o["table"])) == o["text"])]
    if not matched:
        return None
    newest = matched[-1]["later"]
    return newest, ", ".join(o["label"] for o in matched if o["later"] == newest)


__all__ = ["later_objects", "newest_installed"]
