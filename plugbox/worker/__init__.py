"""Everything that runs inside the sandboxed worker process (and the zygote it is forked from).

Nothing under this package may import host services, storage, the loader or the bridge's host side;
tests/unit/test_layering.py walks the imports to keep it so."""
