"""The shop and the render farm: ``core`` (database, storage, jobs, the render job, dispatch),
``shop`` (the web app) and ``farm`` (Celery). See docs/architecture.md.
"""
