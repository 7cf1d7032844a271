"""Unit tests of the snapshot comparison, report and file format (pure Python: snapshots are plain dictionaries)."""

from __future__ import annotations

import copy
import json
import typing as t

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _schema, _schema_ddl
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError


def _snap(**filters: t.Any) -> t.Dict[str, t.Any]:
    snapshot: t.Dict[str, t.Any] = {
        "format": _schema.FORMAT,
        "filters": dict({"with_owners": True, "with_grants": True, "with_comments": True}, **filters),
        "meta": {"server_version_num": 150000, "ledger": []},
        "objects": {plural: {} for plural, _singular in _schema.KINDS},
    }
    objects = snapshot["objects"]
    objects["tables"]["public.customers"] = {
        "kind": "table",
        "owner": "app",
        "acl": ["app=arwdDxt/app"],
        "comment": None,
    }
    objects["columns"]["public.customers.id"] = {"table": "public.customers", "type": "integer", "not_null": True}
    objects["columns"]["public.customers.full_name"] = {"table": "public.customers", "type": "text", "not_null": True}
    objects["indexes"]["public.customers_pkey"] = {"table": "public.customers", "definition": "CREATE UNIQUE INDEX"}
    objects["views"]["public.v"] = {"materialized": False, "definition": " SELECT 1\n   FROM x\n  WHERE y;"}
    return snapshot


def test_equal_snapshots_have_no_differences_and_equal_hashes() -> None:
    a, b = _snap(), _snap()
    assert _schema.diff_snapshots(a, b) == []
    b["meta"]["ledger"] = ["1_x"]  # meta is outside the hash
    assert _schema.snapshot_hash(a) == _schema.snapshot_hash(b)
    assert _schema.render_report([], "prod", "staging") == "No schema differences between prod and staging.\n"


def test_added_removed_changed() -> None:
    a, b = _snap(), _snap()
    b["objects"]["columns"]["public.customers.email"] = {"table": "public.customers", "type": "text", "not_null": False}
    del b["objects"]["indexes"]["public.customers_pkey"]
    b["objects"]["columns"]["public.customers.id"]["type"] = "bigint"
    differences = _schema.diff_snapshots(a, b)
    assert [(d["kind"], d["name"], d["change"], d["attribute"]) for d in differences] == [
        ("column", "public.customers.email", "added", None),
        ("column", "public.customers.id", "changed", "type"),
        ("index", "public.customers_pkey", "removed", None),
    ]
    assert differences[1]["before"] == "integer" and differences[1]["after"] == "bigint"
    report = _schema.render_report(differences, "prod", "dev")
    assert "3 schema differences from prod to dev" in report
    assert "+ column public.customers.email  (only in dev) text" in report
    assert "~ column public.customers.id: type integer -> bigint" in report
    assert "- index public.customers_pkey  (only in prod)" in report
    assert _schema.summarize(differences) == {"column": {"added": 1, "changed": 1}, "index": {"removed": 1}}


def test_multiline_definitions_render_as_unified_diff() -> None:
    a, b = _snap(), _snap()
    b["objects"]["views"]["public.v"]["definition"] = " SELECT 1\n   FROM x\n  WHERE z;"
    report = _schema.render_report(_schema.diff_snapshots(a, b), "a", "b")
    assert "~ view public.v: definition differs" in report
    assert "-  WHERE y;" in report and "+  WHERE z;" in report


def test_rename_needs_a_mapping() -> None:
    a, b = _snap(), _snap()
    b["objects"]["columns"]["public.customers.display_name"] = b["objects"]["columns"].pop("public.customers.full_name")
    plain = _schema.diff_snapshots(a, b)
    assert {(d["name"], d["change"]) for d in plain} == {
        ("public.customers.display_name", "added"),
        ("public.customers.full_name", "removed"),
    }
    mapped = _schema.diff_snapshots(a, b, renames={"public.customers.full_name": "public.customers.display_name"})
    assert [(d["name"], d["change"], d["before"], d["after"]) for d in mapped] == [
        ("public.customers.display_name", "renamed", "public.customers.full_name", "public.customers.display_name")
    ]


def test_table_rename_carries_its_children() -> None:
    a, b = _snap(), _snap()
    objects = b["objects"]
    objects["tables"]["public.clients"] = objects["tables"].pop("public.customers")
    for name in list(objects["columns"]):
        entry = objects["columns"].pop(name)
        objects["columns"][name.replace("customers", "clients")] = dict(entry, table="public.clients")
    objects["indexes"]["public.customers_pkey"]["table"] = "public.clients"
    differences = _schema.diff_snapshots(a, b, renames={"public.customers": "public.clients"})
    assert [(d["kind"], d["change"]) for d in differences] == [
        ("table", "renamed"),
        ("column", "renamed"),
        ("column", "renamed"),
    ]


def test_ignore_attributes_and_objects() -> None:
    a, b = _snap(), _snap()
    b["objects"]["tables"]["public.customers"].update(owner="other", acl=["other=r/other"], comment="hi")
    b["objects"]["tables"]["public.tmp_load"] = {"kind": "table"}
    b["objects"]["columns"]["public.tmp_load.x"] = {"table": "public.tmp_load", "type": "text"}
    assert {d["attribute"] for d in _schema.diff_snapshots(a, b) if d["change"] == "changed"} == {
        "owner",
        "acl",
        "comment",
    }
    quiet = _schema.diff_snapshots(a, b, ignore=["owners", "grants", "comments", "table:public.tmp_*"])
    assert quiet == []
    # a bare glob matches every kind; an unrelated kind prefix does not match
    assert _schema.diff_snapshots(a, b, ignore=["owners", "grants", "comments", "*.tmp_load*"]) == []
    assert len(_schema.diff_snapshots(a, b, ignore=["owners", "grants", "comments", "view:public.tmp_*"])) == 2


def test_attributes_not_captured_on_one_side_are_not_compared() -> None:
    a = _snap()
    b = _snap(with_owners=False, with_grants=False)
    for entry in b["objects"]["tables"].values():
        entry.pop("owner")
        entry.pop("acl")
    assert _schema.diff_snapshots(a, b) == []


@pytest.mark.parametrize("suffix", ["json", "yml"])
def test_file_round_trip_and_tamper_detection(tmp_path: t.Any, suffix: str) -> None:
    snapshot = _snap()
    snapshot["objects"]["types"]['public."Ünïcode"'] = {"kind": "enum", "labels": ["yes", "no", "on", "1.0", "null"]}
    path = tmp_path / ("s." + suffix)
    assert _schema.write_snapshot_file(str(path), snapshot) is True
    assert _schema.write_snapshot_file(str(path), snapshot) is False
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = _schema.read_snapshot_file(str(path))
    assert loaded == snapshot
    assert _schema.serialize(loaded, "yaml" if suffix == "yml" else "json") == path.read_bytes()
    text = path.read_text(encoding="utf-8").replace("full_name", "fullname")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PgShiftError, match="changed after it was written"):
        _schema.read_snapshot_file(str(path))


def test_not_a_snapshot(tmp_path: t.Any) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(PgShiftError, match="not a pgshift schema snapshot"):
        _schema.read_snapshot_file(str(path))
    path.write_text("{not json")
    with pytest.raises(PgShiftError, match="not valid JSON"):
        _schema.read_snapshot_file(str(path))


def test_json_file_is_sorted_and_stable() -> None:
    snapshot = _snap()
    shuffled = copy.deepcopy(snapshot)
    shuffled["objects"] = dict(reversed(list(shuffled["objects"].items())))
    assert _schema.serialize(snapshot) == _schema.serialize(shuffled)
    assert _schema.serialize(snapshot).endswith(b"}\n")


def test_split_name_keeps_quoted_dots() -> None:
    assert _schema_ddl.split_name('public."a.b"."we""ird.x"') == ["public", '"a.b"', '"we""ird.x"']
    assert _schema_ddl.split_name("public.t.col") == ["public", "t", "col"]


def test_proposal_quotes_comment_literals_and_notes_the_rest() -> None:
    differences: t.List[t.Dict[str, t.Any]] = [
        {
            "kind": "table",
            "name": "public.t",
            "change": "changed",
            "attribute": "comment",
            "before": None,
            "after": "it's",
        },
        {
            "kind": "type",
            "name": "public.mood",
            "change": "changed",
            "attribute": "labels",
            "before": [],
            "after": ["a"],
        },
    ]
    assert _schema_ddl.propose_ddl(differences) == [
        "COMMENT ON TABLE public.t IS 'it''s';",
        "-- not proposed: type public.mood changed labels",
    ]
