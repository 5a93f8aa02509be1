"""Alembic environment: runs on the engine or connection provisor hands it."""

from __future__ import annotations

from alembic import context

from provisor.store import Base  # the whole schema: every model module

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    with config.attributes["engine"].connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite changes a table by copying it and dropping the old one; with foreign
            # keys enforced, that drop would cascade to the rows that point at it (a
            # deployment's machines). Off for the migration (it only works outside a
            # transaction), checked after, on again for everything else.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
        if sqlite:
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            if broken:
                raise RuntimeError(f"the migration left rows pointing nowhere: {broken[:5]}")
