"""Pure logic of the migrations area: lint rules (pglast), planning and refusals, node-pg-migrate output parsing."""

from __future__ import annotations

import pytest

from ansible_collections.pgshift.ops.plugins.module_utils import _migrations, _migrations_lint
from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._migration_files import list_migrations


def _lint(tmp_path, body, name="2000_x.sql"):
    path = tmp_path / name
    path.write_text(body)
    (m,) = list_migrations(str(tmp_path))
    findings, _spans = _migrations_lint.lint_sql_migration(m, _migrations.sql_parts(m))
    return [(f["rule"], f["line"], f["severity"]) for f in findings]


def test_rules_fire_on_existing_tables_only(tmp_path):
    body = (
        "-- Up Migration\n"
        "CREATE TABLE fresh (id int);\n"
        "CREATE INDEX fresh_idx ON fresh (id);\n"
        "ALTER TABLE fresh ADD COLUMN c int NOT NULL;\n"
        "DROP TABLE fresh;\n"
    )
    assert _lint(tmp_path, body) == []


def test_each_rule_with_its_line(tmp_path):
    body = (
        "-- Up Migration\n"
        "CREATE INDEX a_idx ON old (a);\n"
        "ALTER TABLE old ADD COLUMN b int NOT NULL;\n"
        "ALTER TABLE old ADD COLUMN c int NOT NULL DEFAULT 0;\n"
        "ALTER TABLE old ALTER COLUMN d TYPE bigint;\n"
        "ALTER TABLE old ALTER COLUMN e TYPE text;\n"
        "ALTER TABLE old ALTER COLUMN f SET NOT NULL;\n"
        "ALTER TABLE old DROP COLUMN g;\n"
        "DROP TABLE other;\n"
        "DROP INDEX CONCURRENTLY a_idx;\n"
    )
    assert _lint(tmp_path, body) == [
        ("index-without-concurrently", 2, "warning"),
        ("missing-lock-timeout", 2, "warning"),
        ("not-null-column-without-default", 3, "error"),
        ("type-change-rewrite", 5, "warning"),
        ("set-not-null", 7, "warning"),
        ("drop-column", 8, "warning"),
        ("drop-table", 9, "warning"),
        ("concurrently-in-transaction", 10, "error"),
    ]


def test_lock_timeout_zero_does_not_count(tmp_path):
    assert ("missing-lock-timeout", 3, "warning") in _lint(
        tmp_path, "-- Up Migration\nSET lock_timeout = 0;\nALTER TABLE t DROP COLUMN x;\n"
    )
    other = tmp_path / "b"
    other.mkdir()
    assert _lint(other, "-- Up Migration\nSET lock_timeout = '3s';\nALTER TABLE t RENAME COLUMN x TO y;\n") == []


def test_syntax_error_has_its_line_and_down_is_parsed_too(tmp_path):
    body = (
        "-- Up Migration\nCREATE TABLE t (id int);\n\nCREATE TABEL u (id int);\n"
        "-- Down Migration\nDROP TABLE t;\nCREATE INDEX CONCURRENTLY i ON t (id);\n"
    )
    assert _lint(tmp_path, body) == [("syntax-error", 4, "error"), ("concurrently-in-transaction", 7, "error")]


def test_lines_count_characters_not_bytes(tmp_path):
    body = "-- Up Migration\nCOMMENT ON TABLE old IS 'Ünïcode — ½';\n\n\nALTER TABLE old DROP COLUMN x;\n"
    assert ("drop-column", 5, "warning") in _lint(tmp_path, body)


def _status(applied, files, **extra):
    pending = [f for f in files if f not in applied]
    base = {
        "applied": applied,
        "pending": pending,
        "missing": [],
        "modified": [],
        "out_of_order": [],
        "order_error": None,
    }
    base.update(extra)
    return base


def test_plan_up_to_target_count_and_down(tmp_path):
    for name in ("1_a.sql", "2_b.sql", "3_c.sql", "4_d.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    files = list_migrations(str(tmp_path))
    status = _status(["1_a"], [m.name for m in files])
    assert [m.name for m in _migrations.plan_run(status, files, direction="up", target="3_c", count=None)] == [
        "2_b",
        "3_c",
    ]
    assert [m.name for m in _migrations.plan_run(status, files, direction="up", target=None, count=1)] == ["2_b"]
    assert _migrations.plan_run(status, files, direction="up", target="1_a", count=None) == []
    with pytest.raises(PgShiftError, match="names no migration"):
        _migrations.plan_run(status, files, direction="up", target="9_z", count=None)
    status = _status(["1_a", "2_b", "3_c"], [m.name for m in files])
    assert [m.name for m in _migrations.plan_run(status, files, direction="down", target=None, count=2)] == [
        "3_c",
        "2_b",
    ]
    assert [m.name for m in _migrations.plan_run(status, files, direction="down", target="2_b", count=None)] == [
        "3_c",
        "2_b",
    ]
    status = _status(["1_a", "0_gone"], [m.name for m in files])
    with pytest.raises(PgShiftError, match="Definitions of migrations 0_gone have been deleted"):
        _migrations.plan_run(status, files, direction="down", target=None, count=1)


def test_refusals_and_accepting_them():
    status = _status(["a"], ["a"], modified=["a"], missing=["b"])
    with pytest.raises(PgShiftError, match="refusing to migrate"):
        _migrations.check_refusals(status, accept_changed=False, check_order=True)
    warnings = _migrations.check_refusals(status, accept_changed=True, check_order=True)
    assert len(warnings) == 2 and warnings[0].endswith("differs): a") and warnings[1].endswith("gone: b")
    status = _status(
        ["b"], ["a", "b"], out_of_order=["a"], order_error="Not run migration a is preceding already run migration b"
    )
    with pytest.raises(PgShiftError, match="Not run migration a is preceding"):
        _migrations.check_refusals(status, accept_changed=False, check_order=True)
    assert _migrations.check_refusals(status, accept_changed=False, check_order=False) == []


def test_node_failure_output_is_summarised():
    stdout = "> Migrating files:\n### MIGRATION 1_a (UP) ###\nok\n### MIGRATION 2_b (UP) ###\nbad\n"
    stderr = (
        "Error executing:\n...\n> Rolling back attempted migration ...\n"
        "error: relation \"x\" does not exist\n  code: '42P01',\n"
    )
    assert (
        _migrations._node_failure(stdout, stderr) == ' in migration 2_b: relation "x" does not exist (SQLSTATE 42P01)'
    )
    assert _migrations._node_failure("", "something odd\n").endswith("something odd")
