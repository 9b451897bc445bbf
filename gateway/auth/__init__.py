"""Authentication: the gateway's client of the external `tollgate.auth.v1.AuthService`, with its decision cache.

`principal` (who a caller is), `cache` (decisions by key digest) and `authenticator` (the client, and `NoAuth`).
"""
