"""The shapes of the HTTP APIs' answers: pydantic models the routes serialise with and the client parses with.

One model per answer, shared by both sides (and by the OpenAPI documents, through `component_schemas`), so the
server, its document and the Python client cannot drift apart.
"""
