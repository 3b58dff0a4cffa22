"""The station page, `twinspect serve`: the inspection and a page about it in one process.

Modules without a web framework (state, versions, stats, gallery, estimate, live, auth) can be
imported in any install; `app`, `server` and `bench_page` need the `page` extra (FastAPI,
uvicorn) and are imported only when serving. See server.py for the threads and README.md,
"The station page", for what a person sees.
"""
