"""The MCP gateway: AECL's MCP front end and the upstream servers behind it."""
