"""The service's core: the database, storage, the job table and the render job both modes run.

Imports neither ``shop`` nor ``farm`` (tests/test_layout.py holds it).
"""
