"""The ``westflow`` command line: the top layer; nothing imports it."""
