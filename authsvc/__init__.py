"""The reference AuthService (tollgate.auth.v1): API keys from a file, stored hashed. It arrives with the auth work."""
