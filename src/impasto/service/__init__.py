"""The shop and the render farm: web app, storage, mail, uploads, jobs, dispatch and workers."""
