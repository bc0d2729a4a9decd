"""The emulator's endpoints, one module per ClearML service (see ``tests/emulator/README.md``).

``base`` holds the status machine and lookups every service shares, ``query`` the ``get_all``
query language; ``tests/emulator/api.py`` builds the services and dispatches calls to them.
"""
