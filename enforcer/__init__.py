"""AECL, the Agent Execution Control Layer.

The public surface is small: the `aecl` command (enforcer.cli), the gRPC API
(proto/aecl/v1), and the audit verifier (enforcer.audit.verify). Everything
else is internal and may change.
"""

__version__ = "0.1.0"
