"""The shop's routes: ``pages`` (customer HTML), ``api`` (JSON, OpenAPI), ``admin``, ``files``.

``shop`` holds the flows the pages and the API share; ``web`` the middleware, templates,
error pages and dependencies; ``schemas`` the API's records.
"""
