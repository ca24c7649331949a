"""The shop's routes: ``pages`` (customer HTML), ``api`` (JSON, OpenAPI), ``admin``, ``files``.

``impasto.service.shop.flows`` holds the flows the pages and the API share; ``web`` the
middleware, templates, error pages, dependencies and the errors' HTTP codes; ``schemas``
the API's records.
"""
