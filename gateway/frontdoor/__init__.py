"""The front door: client protocols (OpenAI JSON and SSE) ⇄ `tollgate.gateway.v1` calls. It only translates."""
