"""Tests of the MCP gateway (enforcer/mcp)."""
