"""Host state after the recover role put a half-done release back (testinfra): production accepts connections with
its previous limit, the half-built database is gone, the journal says rolled back, the service runs, maintenance off."""

# ruff: noqa: S101  (testinfra checks are asserts)

import json
import os

EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
STATE = os.path.join(EPHEMERAL, "recover")


def _sql(host, query, database="postgres"):
    conn = json.loads(host.file(os.path.join(STATE, "conn.json")).content_string)
    cmd = "PGPASSFILE=%s psql -X -At -h 127.0.0.1 -p %d -U postgres -d %s -c %s" % (
        os.path.join(STATE, "pgpass"),
        conn["port"],
        database,
        "'" + query + "'",
    )
    return host.check_output(cmd)


def test_production_accepts_connections_with_its_previous_limit(host):
    assert _sql(host, "SELECT datconnlimit, datallowconn FROM pg_database WHERE datname = $$shop$$") == "-1|t"


def test_production_content_is_there(host):
    assert _sql(host, "SELECT full_name FROM customers WHERE id = 7", "shop") == "Customer 7"


def test_the_half_built_database_was_dropped(host):
    assert _sql(host, "SELECT count(*) FROM pg_database WHERE datname LIKE $$shop\\_\\_%$$") == "0"


def test_the_journal_closed_the_run_as_rolled_back(host):
    run_id = host.file(os.path.join(STATE, "run_id")).content_string.strip()
    runs = dict(line.split("|") for line in _sql(host, "SELECT run_id, status FROM pgshift.runs", "pgshift").split())
    assert runs == {run_id: "rolled_back"}
    actions = json.loads(host.file(os.path.join(STATE, "recover.json")).content_string)["actions"]
    assert "drop shop__next" in actions
    assert any(a.startswith("restore access to shop") for a in actions)


def test_the_service_runs_again(host):
    service = os.path.join(EPHEMERAL, "service")
    pid = int(host.file(os.path.join(service, "service.pid")).content_string.strip())
    assert "http.server" in host.process.get(pid=pid).args
    port = int(host.file(os.path.join(service, "port")).content_string.strip())
    assert host.socket("tcp://127.0.0.1:%d" % port).is_listening


def test_maintenance_is_off(host):
    flag = host.file(os.path.join(EPHEMERAL, "web", "maintenance.flag"))
    assert not flag.exists
