"""Policy decisions: Rego is the single source of truth; Python only feeds it
input and checks the shape of what comes back."""
