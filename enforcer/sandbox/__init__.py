"""Running approved tool calls in an isolated sandbox (bubblewrap)."""
