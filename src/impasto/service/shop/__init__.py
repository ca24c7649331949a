"""The shop: the web app (FastAPI), its routes, flows, security, uploads, mail and payments."""
