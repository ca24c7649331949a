"""Helpers the tests import (``from support.shop import ...``): no tests, no fixtures.

Fixtures live in the conftest.py files; a test module never imports another test module.
``tests/`` is on ``sys.path`` through ``tests/conftest.py`` (pytest's rootdir-relative
"prepend" import mode), so this package is found from every test folder.
"""
