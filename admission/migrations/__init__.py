"""Alembic migrations of the admission store, run from code by :func:`admission.database.migrate`.

A new revision: a new file in ``versions/`` (``script.py.mako`` is its shape) whose ``down_revision``
is the current head; a unit test checks that the head matches the tables in :mod:`admission.rows`.
"""
