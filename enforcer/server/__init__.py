"""The gRPC edge: message conversion, status mapping, server assembly."""
