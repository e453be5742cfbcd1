#!/usr/bin/env python3
"""A host written in Python calls ledgerflow's SQL face.

It records a trigger with ledgerflow.on_host_trigger, reads the sync
dialog, asks for a re-sync, and shows a snapshot whose total disagrees with
its lines being refused (SQLSTATE 22023, nothing written). It talks to
PostgreSQL through psql, so it needs nothing but the standard library; with
psycopg the calls are the same SQL:

    cur.execute("SELECT ledgerflow.on_host_trigger(%s, %s, %s::jsonb)",
                (tenant, "job_created", json.dumps(snapshot)))

Usage: DATABASE_URL=postgres://... python3 docs/examples/host.py TENANT
(run by workflows/tests/sql_face.rs against a real database).
"""

import json
import os
import subprocess
import sys


class SqlError(Exception):
    """An error PostgreSQL raised; the message starts with its SQLSTATE."""


def sql(query, **params):
    """Run one statement through psql; params are psql variables (:'name')."""
    args = ["psql", os.environ["DATABASE_URL"], "-X", "-q", "-A", "-t",
            "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"]
    for name, value in params.items():
        args += ["-v", f"{name}={value}"]
    done = subprocess.run(args, input=query, capture_output=True, text=True)
    if done.returncode != 0:
        # "ERROR:  22023: the invoice snapshot has 1 problem(s): ..."
        first = done.stderr.strip().splitlines()[0]
        raise SqlError(first.removeprefix("psql:<stdin>:1: ").removeprefix("ERROR:  "))
    return done.stdout.strip()


def snapshot(total):
    return {
        "schema_version": 1, "invoice_id": "INV-2001", "number": "2001",
        "currency": "NZD", "issued_on": "2026-12-01", "status": "issued",
        "customer": {"customer_id": "C-9", "name": "Bo Spokes"},
        "lines": [{"line_id": "L1", "sku": "CHAIN-11", "description": "Chain",
                   "quantity": 1000, "unit_price_minor": 4500, "tax_minor": 675}],
        "totals": {"subtotal": 4500, "discount_total": 0, "tax_total": 675, "total": total},
    }


def main():
    tenant = sys.argv[1]
    started = json.loads(sql(
        "SELECT ledgerflow.on_host_trigger(:'tenant', 'invoice_created', :'snapshot')",
        tenant=tenant, snapshot=json.dumps(snapshot(5175))))
    for s in started:
        event = s["event"]
        print(f"connection {s['connection_id']} ({s['provider']}): {event['status']}"
              f" {event['skip_message'] or ', '.join(s['steps'])}")
    connection = started[0]["connection_id"]

    dialog = json.loads(sql("SELECT ledgerflow.sync_dialog(:connection, 'INV-2001')",
                            connection=connection))
    newest = dialog["history"]["events"][0]
    print(f"dialog: {dialog['status']}, newest event {newest['trigger']} ({newest['trigger_label']})")

    resynced = json.loads(sql("SELECT ledgerflow.resync_now(:connection, 'INV-2001')",
                              connection=connection))
    print(f"re-sync: event {resynced['event_id']} {resynced['status']}")

    try:
        sql("SELECT ledgerflow.on_host_trigger(:'tenant', 'items_changed', :'snapshot')",
            tenant=tenant, snapshot=json.dumps(snapshot(9999)))
    except SqlError as refused:
        print(f"refused: {refused}")


if __name__ == "__main__":
    main()
