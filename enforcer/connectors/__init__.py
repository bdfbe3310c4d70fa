"""Connectors: the only way out of a sandbox, to approved upstreams, with
credentials the sandbox never sees (enforcer.connectors.proxy)."""

from enforcer.connectors.proxy import (
    REFUSALS,
    Connector,
    ConnectorGateway,
    ProxiedRequest,
    load_connectors,
)

__all__ = ["REFUSALS", "Connector", "ConnectorGateway", "ProxiedRequest", "load_connectors"]
