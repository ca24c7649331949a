"""The render farm: the Celery app, the shop's dispatcher to it, and the worker process.

Never imports ``shop`` (tests/test_layout.py holds it).
"""
