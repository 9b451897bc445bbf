"""Wire codecs: client and provider JSON ⇄ `tollgate.gateway.v1` messages, written by hand, field by field.

The OpenAI codec serves both the OpenAI-compatible front door and the OpenAI-compatible providers: it is one wire
format, read in one direction by each.
"""
